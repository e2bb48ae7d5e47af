//! Admission: how many connections a server holds (`--max-connections`) and how many each
//! client address holds (`--max-connections-per-ip`), the one set of rules both servers
//! follow. A client admitted is handed a [`Permit`], which the connection keeps (the
//! reactor's slot, the baseline's connection thread) and which gives both counts back when
//! it is dropped, so no way a connection ends can forget to give its place back.
//!
//! At a limit, a connection that owes its client nothing and only waits for its EOF (the
//! lingering close) is worth less than a new client: [`LingeringQueue`] keeps such
//! connections oldest first, and [`Admission::admit_or_reclaim`] asks the server to close
//! one of them to make room before it refuses anyone (as nginx closes its reusable
//! connections when it runs out). The server decides what a key means, whether its
//! connection still lingers, and how to close it.
//!
//! This module owns the counts and that policy. It must not touch a socket, a clock or a
//! connection: it is plain data behind one lock and one atomic, touched when a connection is
//! admitted and when it closes, never per message.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::protocol::{SERVER_BUSY, TOO_MANY_FROM_ADDRESS};

/// The limits and what is counted against them, shared by every loop (or every thread) of a
/// server.
#[derive(Debug)]
pub struct Admission {
    max_connections: usize,
    open: AtomicUsize,
    /// 0: no limit, and the map is never touched.
    max_per_address: usize,
    /// Only addresses with open connections: one whose count reaches zero is forgotten.
    per_address: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a client was not admitted; each has its one-line answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The server holds `--max-connections`.
    Busy,
    /// The client's address holds `--max-connections-per-ip`.
    TooManyFromAddress,
}

impl Refusal {
    /// What the refused client is told before its connection is closed.
    pub fn message(self) -> &'static [u8] {
        match self {
            Refusal::Busy => SERVER_BUSY,
            Refusal::TooManyFromAddress => TOO_MANY_FROM_ADDRESS,
        }
    }
}

/// One connection's place under the limits: one of `--max-connections`, and one of its
/// address's `--max-connections-per-ip` once the address is known. Dropping it gives both
/// back.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    address: Option<IpAddr>,
}

impl Admission {
    /// At most `max_connections` open connections, and at most `max_per_address` from one
    /// address (0: no limit).
    pub fn new(max_connections: usize, max_per_address: usize) -> Arc<Admission> {
        Arc::new(Admission {
            max_connections,
            open: AtomicUsize::new(0),
            max_per_address,
            per_address: Mutex::new(HashMap::new()),
        })
    }

    /// Connections admitted and not closed yet, across every loop or thread.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A place for one more connection, counted against `address` too if it is known
    /// (behind a balancer it is not, until the PROXY header: see
    /// [`Permit::count_address_or_reclaim`]). The address is asked first, so a client that
    /// is over both limits hears about its own.
    pub fn admit(self: &Arc<Self>, address: Option<IpAddr>) -> Result<Permit, Refusal> {
        if let Some(ip) = address {
            if !self.take_address(ip) {
                return Err(Refusal::TooManyFromAddress);
            }
        }
        // Compare and add in one step, so loops admitting at the same instant cannot
        // overshoot the limit between them.
        let taken = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < self.max_connections).then_some(open + 1)
            });
        if taken.is_err() {
            if let Some(ip) = address {
                self.give_address(ip);
            }
            return Err(Refusal::Busy);
        }
        Ok(Permit {
            admission: Arc::clone(self),
            address,
        })
    }

    /// [`admit`](Self::admit), but at a limit `reclaim` is asked to make room (by closing a
    /// lingering connection, whose permit it drops) and admission is tried again: at most
    /// once for each limit, since the room made under one may meet the other. `reclaim`
    /// returns false when it has nothing to close; the client is then refused.
    pub fn admit_or_reclaim(
        self: &Arc<Self>,
        address: Option<IpAddr>,
        mut reclaim: impl FnMut(Refusal) -> bool,
    ) -> Result<Permit, Refusal> {
        let mut outcome = self.admit(address);
        for _ in 0..2 {
            match outcome {
                Err(refusal) if reclaim(refusal) => outcome = self.admit(address),
                _ => break,
            }
        }
        outcome
    }

    fn take_address(&self, ip: IpAddr) -> bool {
        if self.max_per_address == 0 {
            return true;
        }
        // A thread that panicked holding the lock cannot have left a count half-changed.
        let mut counts = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.max_per_address {
            return false;
        }
        *count += 1;
        true
    }

    fn give_address(&self, ip: IpAddr) {
        if self.max_per_address == 0 {
            return;
        }
        let mut counts = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&ip);
            }
        }
    }
}

impl Permit {
    /// The address this permit is counted against, if any.
    pub fn address(&self) -> Option<IpAddr> {
        self.address
    }

    /// `--proxy-protocol`: counts the client the PROXY header names against its address,
    /// with what [`Admission::admit_or_reclaim`] does at the limit. A permit counts one
    /// address at most; one already counted is kept.
    pub fn count_address_or_reclaim(
        &mut self,
        ip: IpAddr,
        mut reclaim: impl FnMut(Refusal) -> bool,
    ) -> Result<(), Refusal> {
        if self.address.is_some() {
            return Ok(());
        }
        let admission = &self.admission;
        let counted = admission.take_address(ip)
            || (reclaim(Refusal::TooManyFromAddress) && admission.take_address(ip));
        if !counted {
            return Err(Refusal::TooManyFromAddress);
        }
        self.address = Some(ip);
        Ok(())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.address {
            self.admission.give_address(ip);
        }
    }
}

/// Connections that owe their client nothing and only wait for its EOF, oldest first, each
/// with the address its permit counts: what a server closes at a limit to admit a new
/// client. `T` is whatever the server finds such a connection by (the reactor's slab key
/// and serial; the baseline's connection id and its permit).
///
/// Entries whose connection stopped lingering (the peer closed, the lingering time ran
/// out) may stay until they are met: the caller says which are still lingering, and keeps
/// the queue bounded with [`retain`](Self::retain).
#[derive(Debug)]
pub struct LingeringQueue<T> {
    queue: VecDeque<(Option<IpAddr>, T)>,
}

impl<T> Default for LingeringQueue<T> {
    fn default() -> LingeringQueue<T> {
        LingeringQueue {
            queue: VecDeque::new(),
        }
    }
}

impl<T> LingeringQueue<T> {
    /// A connection from `address` began lingering now: it is the youngest.
    pub fn push(&mut self, address: Option<IpAddr>, entry: T) {
        self.queue.push_back((address, entry));
    }

    /// Takes the oldest entry that is `still` lingering: any, or at
    /// [`Refusal::TooManyFromAddress`] one from `address` only. Entries no longer lingering
    /// at the front are dropped on the way.
    pub fn take_oldest(
        &mut self,
        refusal: Refusal,
        address: Option<IpAddr>,
        mut still: impl FnMut(&T) -> bool,
    ) -> Option<T> {
        while let Some((_, entry)) = self.queue.front() {
            if still(entry) {
                break;
            }
            self.queue.pop_front();
        }
        let at = match refusal {
            Refusal::Busy => 0,
            Refusal::TooManyFromAddress => self
                .queue
                .iter()
                .position(|(from, entry)| address.is_some() && *from == address && still(entry))?,
        };
        self.queue.remove(at).map(|(_, entry)| entry)
    }

    /// Takes the first entry `matching`, wherever it is (a connection that stopped
    /// lingering by itself, when its entry holds something that must go with it).
    pub fn take(&mut self, mut matching: impl FnMut(&T) -> bool) -> Option<T> {
        let at = self.queue.iter().position(|(_, entry)| matching(entry))?;
        self.queue.remove(at).map(|(_, entry)| entry)
    }

    /// Keeps only the entries `still` lingering.
    pub fn retain(&mut self, mut still: impl FnMut(&T) -> bool) {
        self.queue.retain(|(_, entry)| still(entry));
    }

    /// Entries held, stale ones included.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// No entry held.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));

    #[test]
    fn permits_hold_the_limits_and_give_their_places_back_when_dropped() {
        let admission = Admission::new(3, 2);
        let a1 = admission.admit(Some(A)).unwrap();
        let a2 = admission.admit(Some(A)).unwrap();
        assert_eq!(
            admission.admit(Some(A)).unwrap_err(),
            Refusal::TooManyFromAddress
        );
        let b1 = admission.admit(Some(B)).unwrap();
        assert_eq!(admission.admit(Some(B)).unwrap_err(), Refusal::Busy);
        assert_eq!(admission.open(), 3);
        drop(a1);
        assert_eq!(admission.open(), 2);
        let a3 = admission.admit(Some(A)).unwrap();
        drop((a2, a3, b1));
        assert_eq!(admission.open(), 0);
        assert!(
            admission.per_address.lock().unwrap().is_empty(),
            "closed addresses are forgotten"
        );
    }

    #[test]
    fn a_refusal_for_the_server_gives_the_address_its_place_back() {
        let admission = Admission::new(1, 5);
        let _held = admission.admit(Some(B)).unwrap();
        for _ in 0..10 {
            assert_eq!(admission.admit(Some(A)).unwrap_err(), Refusal::Busy);
        }
        assert_eq!(admission.per_address.lock().unwrap().get(&A), None);
    }

    #[test]
    fn no_per_address_limit_counts_nothing_per_address() {
        let admission = Admission::new(usize::MAX, 0);
        let permits: Vec<_> = (0..1000)
            .map(|_| admission.admit(Some(A)).unwrap())
            .collect();
        assert!(admission.per_address.lock().unwrap().is_empty());
        assert_eq!(admission.open(), 1000);
        drop(permits);
        assert_eq!(admission.open(), 0);
    }

    #[test]
    fn an_address_counted_after_the_accept_is_given_back_with_the_permit() {
        let admission = Admission::new(10, 1);
        let mut proxied = admission.admit(None).unwrap();
        proxied.count_address_or_reclaim(A, |_| false).unwrap();
        let mut second = admission.admit(None).unwrap();
        assert_eq!(
            second.count_address_or_reclaim(A, |_| false),
            Err(Refusal::TooManyFromAddress)
        );
        drop(proxied);
        second.count_address_or_reclaim(A, |_| false).unwrap();
        assert_eq!(second.address(), Some(A));
    }

    #[test]
    fn at_a_limit_reclaiming_makes_room_once_per_limit() {
        let admission = Admission::new(2, 1);
        let mut held = vec![
            admission.admit(Some(A)).unwrap(),
            admission.admit(None).unwrap(),
        ];
        // A's place is made, but another loop takes the server's place meanwhile: then the
        // server's limit is met too, and reclaimed once more.
        let mut asked = Vec::new();
        let admitted = admission.admit_or_reclaim(Some(A), |refusal| {
            asked.push(refusal);
            match refusal {
                Refusal::TooManyFromAddress => {
                    held.remove(0);
                    held.push(admission.admit(None).unwrap());
                }
                Refusal::Busy => drop(held.pop()),
            }
            true
        });
        let admitted = admitted.unwrap();
        assert_eq!(admitted.address(), Some(A));
        assert_eq!(asked, [Refusal::TooManyFromAddress, Refusal::Busy]);
        assert_eq!((held.len(), admission.open()), (1, 2));
        // Nothing to reclaim: refused, and asked once.
        let mut asked = 0;
        let refused = admission.admit_or_reclaim(Some(B), |_| {
            asked += 1;
            false
        });
        assert_eq!(refused.unwrap_err(), Refusal::Busy);
        assert_eq!(asked, 1);
        // A reclaim that claims to make room but does not: asked at most twice, then refused.
        let mut asked = 0;
        let refused = admission.admit_or_reclaim(Some(B), |_| {
            asked += 1;
            true
        });
        assert_eq!(refused.unwrap_err(), Refusal::Busy);
        assert_eq!(asked, 2);
    }

    #[test]
    fn the_oldest_lingering_is_taken_first_and_of_the_address_asked() {
        let mut lingering = LingeringQueue::default();
        for (i, address) in [A, B, A, B].into_iter().enumerate() {
            lingering.push(Some(address), i);
        }
        let all = |_: &usize| true;
        assert_eq!(
            lingering.take_oldest(Refusal::TooManyFromAddress, Some(B), all),
            Some(1)
        );
        assert_eq!(lingering.take_oldest(Refusal::Busy, Some(B), all), Some(0));
        assert_eq!(
            lingering.take_oldest(Refusal::TooManyFromAddress, None, all),
            None,
            "an unknown address matches nobody"
        );
        assert_eq!(lingering.len(), 2);
    }

    #[test]
    fn entries_no_longer_lingering_are_skipped_and_dropped() {
        let mut lingering = LingeringQueue::default();
        for i in 0..5 {
            lingering.push(Some(if i % 2 == 0 { A } else { B }), i);
        }
        // 0 and 1 closed by themselves: dropped from the front.
        let still = |&i: &usize| i >= 2;
        assert_eq!(lingering.take_oldest(Refusal::Busy, None, still), Some(2));
        assert_eq!(lingering.len(), 2);
        // Of B, 3 has closed too: none of B is left.
        let still = |&i: &usize| i != 3;
        assert_eq!(
            lingering.take_oldest(Refusal::TooManyFromAddress, Some(B), still),
            None
        );
        assert_eq!(lingering.take(|&i| i == 4), Some(4));
        lingering.retain(|_| false);
        assert!(lingering.is_empty());
    }
}
