//! Why a run's errors happened, as data: each error is counted under its cause (a short
//! name that is the same for every error of its kind, such as `TLS
//! InvalidCertificate(UnknownIssuer)` or `Connection refused (os error 111)`), and the
//! first message of each cause is kept whole, so a failed run says why without a log.
//! Counting only: the engines decide what a cause is, the report prints them.

/// Distinct causes a run keeps; errors of any further cause are counted under
/// [`OTHER_CAUSES`]. A failing run has a handful of causes; the bound keeps a server that
/// fails in ever new ways from growing the report without end.
pub const MAX_CAUSES: usize = 16;

/// The cause errors are counted under once [`MAX_CAUSES`] are taken.
pub const OTHER_CAUSES: &str = "other causes";

/// Characters of a first message kept: room for a certificate's names or an unexpected
/// line, not for a whole reply of any size.
const MAX_MESSAGE: usize = 300;

/// Errors of one cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// What went wrong, the same for every error counted here.
    pub cause: String,
    /// How many errors.
    pub count: u64,
    /// The first error's whole message: which client, and the details.
    pub first: String,
}

/// Errors by cause, in the order each cause was first met.
#[derive(Clone, Debug, Default)]
pub(super) struct Causes(Vec<Cause>);

impl Causes {
    /// Counts one error of `cause`; `message` is only asked for the first of its cause.
    pub(super) fn count(&mut self, cause: &str, message: impl FnOnce() -> String) {
        self.count_many(cause, 1, message);
    }

    fn count_many(&mut self, cause: &str, count: u64, message: impl FnOnce() -> String) {
        let cause = if self.0.len() >= MAX_CAUSES && !self.0.iter().any(|c| c.cause == cause) {
            OTHER_CAUSES
        } else {
            cause
        };
        match self.0.iter_mut().find(|c| c.cause == cause) {
            Some(known) => known.count += count,
            None => self.0.push(Cause {
                cause: cause.to_string(),
                count,
                first: truncated(message()),
            }),
        }
    }

    /// Adds another engine's causes to these; a cause both met keeps this one's first
    /// message.
    pub(super) fn add(&mut self, other: &Causes) {
        for cause in &other.0 {
            self.count_many(&cause.cause, cause.count, || cause.first.clone());
        }
    }

    pub(super) fn into_vec(self) -> Vec<Cause> {
        self.0
    }
}

fn truncated(mut message: String) -> String {
    if let Some((end, _)) = message.char_indices().nth(MAX_MESSAGE) {
        message.truncate(end);
        message.push_str("...");
    }
    message
}

/// `text` as a JSON string, quotes included.
pub(super) fn json_string(text: &str) -> String {
    let mut json = String::with_capacity(text.len() + 2);
    json.push('"');
    for c in text.chars() {
        match c {
            '"' => json.push_str("\\\""),
            '\\' => json.push_str("\\\\"),
            '\n' => json.push_str("\\n"),
            c if u32::from(c) < 0x20 => json.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => json.push(c),
        }
    }
    json.push('"');
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_counted_with_its_first_message_and_the_list_is_bounded() {
        let mut causes = Causes::default();
        causes.count("refused", || "client 0: refused".into());
        causes.count("refused", || unreachable!("only the first message is made"));
        causes.count("reset", || "client 2: reset".into());
        let mut other = Causes::default();
        other.count("reset", || "client 9: reset".into());
        other.count("eof", || "client 7: eof".into());
        causes.add(&other);
        let list = causes.into_vec();
        let summary: Vec<_> = list
            .iter()
            .map(|c| (c.cause.as_str(), c.count, c.first.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("refused", 2, "client 0: refused"),
                ("reset", 2, "client 2: reset"),
                ("eof", 1, "client 7: eof"),
            ]
        );

        let mut many = Causes::default();
        for i in 0..MAX_CAUSES + 5 {
            many.count(&format!("cause {i}"), || "x".repeat(10 * MAX_MESSAGE));
        }
        let list = many.into_vec();
        assert_eq!(list.len(), MAX_CAUSES + 1);
        assert_eq!(list[MAX_CAUSES].cause, OTHER_CAUSES);
        assert_eq!(list[MAX_CAUSES].count, 5);
        assert!(list[0].first.len() <= MAX_MESSAGE + 3);
    }

    #[test]
    fn json_strings_escape_what_json_requires() {
        assert_eq!(
            json_string("a \"b\" \\ c\n\u{1}"),
            r#""a \"b\" \\ c\n\u0001""#
        );
    }
}
