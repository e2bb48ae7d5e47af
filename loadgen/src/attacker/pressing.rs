//! How each kind of hostile client presses on the server, turn by turn: the slow readers'
//! and the partial lines' writes, the flood's datagrams and the dribblers' bytes, each
//! within its budget of one turn. The bookkeeping around them is `attacker.rs`'s.

use super::*;

impl Attacker<'_> {
    /// Gives every client on the ready list its turn; those with more to do stay on it.
    pub(super) fn press_ready(&mut self) {
        let mut pressing = std::mem::take(&mut self.pressing);
        std::mem::swap(&mut pressing, &mut self.ready);
        let now = Instant::now();
        for &id in &pressing {
            self.rogues[id].queued = false;
            match self.rogues[id].kind {
                HostileKind::SlowReader => self.write_lines(id, now),
                HostileKind::UdpFlood => self.send_datagrams(id, now),
                HostileKind::PartialLine => self.write_partial_line(id, now),
                _ => {}
            }
        }
        pressing.clear();
        self.pressing = pressing;
    }

    /// A slow reader's turn: empty lines until the kernel refuses them or the budget is
    /// spent.
    pub(super) fn write_lines(&mut self, id: usize, now: Instant) {
        let rogue = &mut self.rogues[id];
        let tally = &mut self.tallies[rogue.tally];
        let Held::Tcp(stream) = &mut rogue.socket else {
            return;
        };
        let mut written = 0;
        while written < PRESS_BUDGET {
            match stream.write(&EMPTY_LINES) {
                Ok(0) => return self.end(id, Outcome::Reset),
                Ok(n) => {
                    written += n;
                    tally.bytes_sent += n as u64;
                    rogue.progress_at = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    rogue.blocked = true;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.end(id, Outcome::Reset),
            }
        }
        self.queue(id);
    }

    /// A partial-line client's turn: the rest of its line until the kernel refuses it or the
    /// budget is spent; once all of it is taken, it only waits.
    pub(super) fn write_partial_line(&mut self, id: usize, now: Instant) {
        let rogue = &mut self.rogues[id];
        let tally = &mut self.tallies[rogue.tally];
        let Held::Tcp(stream) = &mut rogue.socket else {
            return;
        };
        if rogue.phase != Phase::Pressing {
            return;
        }
        let mut written = 0;
        while rogue.unsent > 0 && written < PRESS_BUDGET {
            match stream.write(&NO_NEWLINE[..rogue.unsent.min(FLOOD_CHUNK)]) {
                Ok(0) => return self.end(id, Outcome::Reset),
                Ok(n) => {
                    written += n;
                    rogue.unsent -= n;
                    tally.bytes_sent += n as u64;
                    rogue.progress_at = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    rogue.blocked = true;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    let outcome = rogue.err.map_or(Outcome::Reset, Outcome::Err);
                    return self.end(id, outcome);
                }
            }
        }
        if rogue.unsent > 0 {
            self.queue(id);
        } else {
            self.set_up_done(id);
        }
    }

    /// A flood socket's turn: datagrams until the kernel refuses them or the burst is
    /// spent.
    pub(super) fn send_datagrams(&mut self, id: usize, now: Instant) {
        let rogue = &mut self.rogues[id];
        let tally = &mut self.tallies[rogue.tally];
        let Held::Udp(socket) = &rogue.socket else {
            return;
        };
        for _ in 0..FLOOD_BURST {
            match socket.send(DATAGRAM) {
                Ok(n) => {
                    tally.datagrams_sent += 1;
                    tally.bytes_sent += n as u64;
                    rogue.progress_at = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    rogue.blocked = true;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("hostile {id}: flood refused: {e}");
                    return self.end(id, Outcome::Failed);
                }
            }
        }
        self.queue(id);
    }

    /// Sends the dribblers' bytes that are due.
    pub(super) fn dribble(&mut self, now: Instant) {
        while let Some(&(due, id)) = self.dribbles.front() {
            if due > now {
                return;
            }
            self.dribbles.pop_front();
            let rogue = &mut self.rogues[id];
            if rogue.phase != Phase::Pressing {
                continue;
            }
            let Held::Tcp(stream) = &mut rogue.socket else {
                continue;
            };
            match stream.write(DRIBBLE) {
                Ok(n) => {
                    self.tallies[rogue.tally].bytes_sent += n as u64;
                    rogue.progress_at = now;
                    rogue.blocked = false;
                }
                // The byte waits for the next interval.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    rogue.blocked = true;
                }
                Err(_) => {
                    let outcome = rogue.err.map_or(Outcome::Reset, Outcome::Err);
                    self.end(id, outcome);
                    continue;
                }
            }
            self.dribbles.push_back((now + DRIBBLE_INTERVAL, id));
        }
    }
}
