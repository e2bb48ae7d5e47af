//! The HTTP the metrics endpoint speaks, with no I/O: a request head read with `httparse`
//! ([`parse`]), the responses written ([`response`], [`error_response`]), their statuses
//! ([`Status`]) and the count of each sent ([`Responses`]).
//!
//! This module owns what HTTP/1.x the endpoint accepts (`GET` or `HEAD` of `/metrics`,
//! at most [`MAX_HEADERS`] headers) and what every response says (its length, and
//! `Connection: close`). It must not read or write a socket, or know how long a head may
//! grow or when a client is given up on: those are the client's (`client.rs`), and the body
//! of a scrape is `text.rs`'s.

/// Headers parsed per request; more is a `400`. Prometheus sends five.
const MAX_HEADERS: usize = 32;

/// A response's status. Declared in the order of [`Status::ALL`], so that `status as usize`
/// is its place there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    /// Beyond [`MAX_METRICS_CLIENTS`](super::MAX_METRICS_CLIENTS).
    ServiceUnavailable,
}

impl Status {
    pub(super) const ALL: [Status; 5] = [
        Status::Ok,
        Status::BadRequest,
        Status::NotFound,
        Status::MethodNotAllowed,
        Status::ServiceUnavailable,
    ];

    pub(super) fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::ServiceUnavailable => 503,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::ServiceUnavailable => "Service Unavailable",
        }
    }
}

/// Responses the endpoint sent, by status, in the order of [`Status::ALL`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Responses(pub(super) [u64; Status::ALL.len()]);

impl Responses {
    pub(super) fn count(&mut self, status: Status) {
        self.0[status as usize] += 1;
    }
}

/// A whole HTTP response: the head and, unless `head_only` (a `HEAD` request), `body`.
/// Every response closes the connection.
pub(super) fn response(
    status: Status,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        status.code(),
        status.reason(),
        body.len()
    );
    if status == Status::MethodNotAllowed {
        head += "Allow: GET, HEAD\r\n";
    }
    head += "\r\n";
    let mut bytes = head.into_bytes();
    if !head_only {
        bytes.extend_from_slice(body);
    }
    bytes
}

/// A response that says only its status.
pub(super) fn error_response(status: Status, head_only: bool) -> Vec<u8> {
    let body = format!("{} {}\n", status.code(), status.reason());
    response(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        head_only,
    )
}

/// What a request head asks for, as far as it has arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Parsed {
    /// Not a whole head yet.
    Incomplete,
    /// `GET /metrics`, or `HEAD` (`head_only`).
    Scrape { head_only: bool },
    /// Anything else, answered with only a status.
    Reject { status: Status, head_only: bool },
}

/// Reads a request head with `httparse`. Only the path matters (a query string is
/// ignored); a body, if any, is never read, and is dropped with whatever else the client
/// sends after its head.
pub(super) fn parse(head: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Partial) => Parsed::Incomplete,
        Err(_) => Parsed::Reject {
            status: Status::BadRequest,
            head_only: false,
        },
        Ok(httparse::Status::Complete(_)) => {
            let head_only = request.method == Some("HEAD");
            let path = request.path.unwrap_or_default();
            let path = path.split_once('?').map_or(path, |(path, _query)| path);
            let reject = |status| Parsed::Reject { status, head_only };
            if path != "/metrics" {
                reject(Status::NotFound)
            } else if matches!(request.method, Some("GET" | "HEAD")) {
                Parsed::Scrape { head_only }
            } else {
                reject(Status::MethodNotAllowed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::text::TEXT_FORMAT;

    #[test]
    fn requests_are_read_with_httparse_and_only_get_or_head_of_metrics_is_a_scrape() {
        let reject = |status, head_only| Parsed::Reject { status, head_only };
        for (request, expected) in [
            (
                &b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"[..],
                Parsed::Scrape { head_only: false },
            ),
            (
                b"HEAD /metrics HTTP/1.0\r\n\r\n",
                Parsed::Scrape { head_only: true },
            ),
            (
                b"GET /metrics?name[]=x HTTP/1.1\r\n\r\n",
                Parsed::Scrape { head_only: false },
            ),
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n", Parsed::Incomplete),
            (b"GE", Parsed::Incomplete),
            (b"GET / HTTP/1.1\r\n\r\n", reject(Status::NotFound, false)),
            (
                b"HEAD /metricsx HTTP/1.1\r\n\r\n",
                reject(Status::NotFound, true),
            ),
            (
                b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
                reject(Status::MethodNotAllowed, false),
            ),
            (b"\x16\x03\x01\x02\x00", reject(Status::BadRequest, false)),
            (b"hello\r\n\r\n", reject(Status::BadRequest, false)),
        ] {
            assert_eq!(
                parse(request),
                expected,
                "{:?}",
                String::from_utf8_lossy(request)
            );
        }
        let many = format!(
            "GET /metrics HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(parse(many.as_bytes()), reject(Status::BadRequest, false));
    }

    #[test]
    fn a_response_says_its_length_and_closes_and_head_leaves_the_body_out() {
        let get = response(Status::Ok, TEXT_FORMAT, b"abc\n", false);
        let get = String::from_utf8(get).unwrap();
        assert!(get.starts_with("HTTP/1.1 200 OK\r\n"), "{get}");
        assert!(
            get.contains("\r\nContent-Type: text/plain; version=0.0.4"),
            "{get}"
        );
        assert!(get.contains("\r\nContent-Length: 4\r\n"), "{get}");
        assert!(get.contains("\r\nConnection: close\r\n"), "{get}");
        assert!(get.ends_with("\r\n\r\nabc\n"), "{get}");
        let head = response(Status::Ok, TEXT_FORMAT, b"abc\n", true);
        assert!(head.ends_with(b"Content-Length: 4\r\nConnection: close\r\n\r\n"));
        let not_allowed =
            String::from_utf8(error_response(Status::MethodNotAllowed, false)).unwrap();
        assert!(not_allowed.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(not_allowed.contains("\r\nAllow: GET, HEAD\r\n"));
    }
}
