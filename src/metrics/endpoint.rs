//! The metrics endpoint, in the loop that serves it: its listener, a fixed number of places
//! for clients ([`MAX_METRICS_CLIENTS`], each with its own token), their deadlines, and the
//! answer to each scrape once every loop has published its counts.
//!
//! This module owns accepting (a budget per turn, a back-off when accept fails, a `503` for
//! a client beyond the places), routing a client's events to it, asking the [`Hub`] for a
//! scrape and answering it, and closing a client at its [`METRICS_DEADLINE`] or once it is
//! done. It must not read or write a client's bytes (`client.rs`), parse HTTP (`http.rs`)
//! or write the text (`text.rs`); and it must not block or spin the loop: everything here
//! is bounded per turn, and what is left waits for a deadline in the loop's heap
//! ([`Due::MetricsAccept`], [`Due::MetricsClient`]), which the loop hands back
//! ([`on_deadline`](Endpoint::on_deadline)).

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::net::{self, ACCEPT_BACKOFF};
use crate::timers::{Due, Timer, Timers};

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

    pub(super) fn on_event(
        &mut self,
        token: Token,
        registry: &Registry,
        hub: &Hub,
        now: Instant,
        timers: &mut Timers,
    ) {
        if token == self.listener_token {
            return self.accept(registry, now, timers);
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

    /// A deadline of the endpoint's came due: accept again, or end a client's time.
    pub(super) fn on_deadline(
        &mut self,
        timer: Timer,
        registry: &Registry,
        now: Instant,
        timers: &mut Timers,
    ) {
        match timer.due {
            Due::MetricsAccept => self.accept(registry, now, timers),
            Due::MetricsClient { place, serial } => {
                if let Some(client) = &mut self.clients[place] {
                    if client.serial == serial && client.state != ClientState::Closed {
                        log::debug!("metrics client: deadline passed while {:?}", client.state);
                        client.state = ClientState::Closed;
                    }
                }
            }
            _ => {}
        }
    }

    /// Accepts until WouldBlock or the budget. Accepting again is a deadline in the loop's
    /// heap ([`Due::MetricsAccept`]): at once when the budget ran out, later when accept
    /// failed for want of resources.
    fn accept(&mut self, registry: &Registry, now: Instant, timers: &mut Timers) {
        timers.set(Due::MetricsAccept, None);
        for _ in 0..ACCEPT_PER_TURN {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, registry, now, timers),
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
                    timers.set(Due::MetricsAccept, Some(now + ACCEPT_BACKOFF));
                    return;
                }
            }
        }
        // Stopped for the budget: more may wait, and no new edge will say so.
        timers.set(Due::MetricsAccept, Some(now));
    }

    fn admit(
        &mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        registry: &Registry,
        now: Instant,
        timers: &mut Timers,
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
        timers.schedule(Timer {
            at: now + METRICS_DEADLINE,
            due: Due::MetricsClient { place, serial },
        });
        self.clients[place] = Some(Client::new(stream, serial));
        log::debug!("metrics client {peer} as {token:?}");
    }

    /// Answers the scrapes whose counts are in, and drops the clients that are done.
    pub(super) fn end_of_turn(&mut self, hub: &Hub) {
        self.answer_scrapes(hub);
        for place in &mut self.clients {
            if place
                .as_ref()
                .is_some_and(|client| client.state == ClientState::Closed)
            {
                // Dropping the stream closes it, which also takes it out of the poll.
                *place = None;
            }
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
}
