//! The connection's unsent output, [`Output`]: the bytes a socket did not take yet, kept in
//! order and given back to the allocator once sent. It does no I/O; the connection's one
//! write path decides what goes in and reports what went out.

/// Bytes the socket has not taken yet, in order. Empty, with no allocation, whenever the
/// socket keeps up: replies are written straight from the loop's buffer and only the
/// leftover of a partial write is copied here.
#[derive(Default)]
pub(super) struct Output {
    pub(super) bytes: Vec<u8>,
    /// How much of `bytes` is already written.
    sent: usize,
}

impl Output {
    #[inline]
    pub(super) fn unsent(&self) -> &[u8] {
        &self.bytes[self.sent..]
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.sent == self.bytes.len()
    }

    /// How many bytes are unsent (as `unsent().len()`, without slicing).
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.bytes.len() - self.sent
    }

    /// Appends behind what is unsent. The written part is dropped first and the buffer
    /// grows by exactly what is needed, so its capacity, which the memory budget counts,
    /// stays close to what is really owed. This runs only for a client that is not keeping
    /// up, never on the per-message path.
    pub(super) fn push(&mut self, bytes: &[u8]) {
        if self.sent > 0 {
            self.bytes.drain(..self.sent);
            self.sent = 0;
        }
        self.bytes.reserve_exact(bytes.len());
        self.bytes.extend_from_slice(bytes);
    }

    pub(super) fn consume(&mut self, written: usize) {
        self.sent += written;
        if self.is_empty() {
            self.clear();
        }
    }

    /// Gives the memory back: an idle connection should own no buffer.
    pub(super) fn clear(&mut self) {
        *self = Output::default();
    }
}
