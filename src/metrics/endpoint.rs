//! The metrics endpoint, in the loop that serves it: its listener, a fixed number of places
//! for clients ([`MAX_METRICS_CLIENTS`], each with its own token), their deadlines, and the
//! answer to each scrape once every loop has published its counts.
//!
//! This module owns accepting (a budget per turn, a back-off when accept fails, a `503` for
//! a client beyond the places), routing a client's events to it, asking the [`Hub`] for a
//! scrape and answering it, and closing a client at its [`METRICS_DEADLINE`] or once it is
//! done. It must not read or write a client's bytes (`client.rs`), parse HTTP (`http.rs`)
//! or write the text (`text.rs`); and it must not block or spin the loop: everything here
//! is bounded per turn, and what is left waits for [`next_deadline`](Endpoint::next_deadline).

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::net::{self, ACCEPT_BACKOFF};
use crate::timers::{Timer, Timers};

use super::client::{Client, ClientState, Outcome};
use super::http::{error_response, response, Responses, Status};
use super::hub::Hub;
use super::text::{render, Scrape, TEXT_FORMAT};
use super::{MAX_METRICS_CLIENTS, METRICS_DEADLINE};

/// Connections accepted per event (or turn); the rest on the next turn, so a flood on the
/// metrics port cannot hold the loop.
const ACCEPT_PER_TURN: usize = 16;

/// The metrics endpoint, in the loop that serves it: the listener and a fixed number of
/// places for clients, each with its own token.
pub(super) struct Endpoint {
    /// `None` once it stopped listening.
    pub(super) listener: Option<TcpListener>,
    listener_token: Token,
    /// The token of place 0; place `i` has `first_client + i`.
    first_client: usize,
    clients: [Option<Client>; MAX_METRICS_CLIENTS],
    next_serial: u64,
    /// One deadline per client, from its accept: (time, place, serial).
    deadlines: Timers,
    /// Accept again at the end of the first turn at or after this: the accept budget ran
    /// out (then it is now), or accept failed for want of resources.
    accept_at: Option<Instant>,
    responses: Responses,
}

impl Endpoint {
    pub(super) fn new(listener: TcpListener) -> Endpoint {
        Endpoint {
            listener: Some(listener),
            listener_token: Token(0),
            first_client: 0,
            clients: std::array::from_fn(|_| None),
            next_serial: 0,
            deadlines: Timers::new(),
            accept_at: None,
            responses: Responses::default(),
        }
    }

    pub(super) fn register(
        &mut self,
        registry: &Registry,
        listener: Token,
        first_client: usize,
    ) -> io::Result<()> {
        self.listener_token = listener;
        self.first_client = first_client;
        match &mut self.listener {
            Some(socket) => registry.register(socket, listener, Interest::READABLE),
            None => Ok(()),
        }
    }

    pub(super) fn on_event(&mut self, token: Token, registry: &Registry, hub: &Hub, now: Instant) {
        if token == self.listener_token {
            return self.accept(registry, now);
        }
        let Some(place) = token
            .0
            .checked_sub(self.first_client)
            .filter(|&place| place < MAX_METRICS_CLIENTS)
        else {
            return;
        };
        let Some(client) = &mut self.clients[place] else {
            return;
        };
        match client.on_event() {
            Outcome::Wait => {}
            Outcome::Scrape { head_only } => {
                client.state = ClientState::Gathering {
                    generation: hub.request(),
                    head_only,
                };
            }
            Outcome::Reject { status, head_only } => {
                client.respond(error_response(status, head_only));
                self.responses.count(status);
            }
        }
    }

    /// Accepts until WouldBlock or the budget.
    fn accept(&mut self, registry: &Registry, now: Instant) {
        self.accept_at = None;
        for _ in 0..ACCEPT_PER_TURN {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, registry, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    // Out of descriptors, most likely: retrying at once would spin. The main
                    // listener's own accept logs the episode.
                    log::debug!("metrics accept failed: {e}; retrying in {ACCEPT_BACKOFF:?}");
                    self.accept_at = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
        // Stopped for the budget: more may wait, and no new edge will say so.
        self.accept_at = Some(now);
    }

    fn admit(
        &mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        registry: &Registry,
        now: Instant,
    ) {
        let Some(place) = self.clients.iter().position(Option::is_none) else {
            let refusal = error_response(Status::ServiceUnavailable, false);
            net::refuse(socket2::SockRef::from(&stream), &refusal);
            self.responses.count(Status::ServiceUnavailable);
            log::debug!("metrics client {peer} refused: {MAX_METRICS_CLIENTS} already served");
            return;
        };
        let token = Token(self.first_client + place);
        // Both interests, once: a metrics client sees a handful of events in its life, and
        // an event its state has no use for costs one look. (The main connections see
        // millions, so they register what their state needs, and only when it changes.)
        if let Err(e) =
            registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            log::debug!("cannot register metrics client {peer}: {e}");
            return;
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        self.deadlines.schedule(Timer {
            at: now + METRICS_DEADLINE,
            key: place,
            serial,
        });
        self.clients[place] = Some(Client::new(stream, serial));
        log::debug!("metrics client {peer} as {token:?}");
    }

    pub(super) fn end_of_turn(&mut self, hub: &Hub, registry: &Registry, now: Instant) {
        if self.accept_at.is_some_and(|at| at <= now) {
            self.accept(registry, now);
        }
        self.answer_scrapes(hub);
        while let Some(timer) = self.deadlines.pop_due(now) {
            if let Some(client) = &mut self.clients[timer.key] {
                if client.serial == timer.serial && client.state != ClientState::Closed {
                    log::debug!("metrics client: deadline passed while {:?}", client.state);
                    client.state = ClientState::Closed;
                }
            }
        }
        for place in &mut self.clients {
            if place
                .as_ref()
                .is_some_and(|client| client.state == ClientState::Closed)
            {
                // Dropping the stream closes it, which also takes it out of the poll.
                *place = None;
            }
        }
        // Entries of clients that ended early stay until due; prune them if churn piles
        // them up.
        if self.deadlines.len() > 2 * MAX_METRICS_CLIENTS + 64 {
            let clients = &self.clients;
            self.deadlines.retain(|timer| {
                clients[timer.key]
                    .as_ref()
                    .is_some_and(|client| client.serial == timer.serial)
            });
        }
    }

    /// Answers each waiting scrape whose counts every loop has published.
    fn answer_scrapes(&mut self, hub: &Hub) {
        for place in 0..MAX_METRICS_CLIENTS {
            let Some(ClientState::Gathering {
                generation,
                head_only,
            }) = self.clients[place].as_ref().map(|client| client.state)
            else {
                continue;
            };
            let Some(counts) = hub.gathered(generation) else {
                continue;
            };
            self.responses.count(Status::Ok);
            let scrape = Scrape {
                counts,
                open_connections: hub.admission.open(),
                buffered: hub.budget.held(),
                buffer_budget: hub.buffer_budget,
                loops: hub.loops(),
                started: hub.started,
                responses: self.responses,
            };
            let body = render(&scrape);
            if let Some(client) = &mut self.clients[place] {
                client.respond(response(
                    Status::Ok,
                    TEXT_FORMAT,
                    body.as_bytes(),
                    head_only,
                ));
            }
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        [self.deadlines.next(), self.accept_at]
            .into_iter()
            .flatten()
            .min()
    }
}
