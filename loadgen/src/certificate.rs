//! What loadgen reads itself of a certificate it pins (`--tls-ca` naming the server's own
//! certificate, see `tls.rs`): its validity period, its subject's common name, and whether
//! it has a subjectAltName extension. rustls checks everything else, and a certificate that
//! is not pinned is checked by rustls alone; this reads no more of the DER than those three
//! facts need, and anything it cannot read is `None`, which fails the pin.

/// DER tags (X.690) of the elements walked here.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OBJECT_IDENTIFIER: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// `[0]`, the optional version ahead of the serial number.
const EXPLICIT_VERSION: u8 = 0xa0;
/// `[3]`, the extensions at the end of a v3 certificate.
const EXPLICIT_EXTENSIONS: u8 = 0xa3;
/// The string types a common name is written in that read as UTF-8: UTF8String,
/// PrintableString, IA5String.
const TEXT_TAGS: [u8; 3] = [0x0c, 0x13, 0x16];

/// id-at-commonName, 2.5.4.3, as its DER contents.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// id-ce-subjectAltName, 2.5.29.17.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// The facts the pin checks, read from one certificate's DER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Facts {
    /// notBefore, seconds since the Unix epoch (0 for any time before it).
    pub(super) not_before: u64,
    /// notAfter, seconds since the Unix epoch.
    pub(super) not_after: u64,
    /// The subject's last commonName, the one OpenSSL matches against when there is no
    /// subjectAltName.
    pub(super) common_name: Option<String>,
    pub(super) has_subject_alt_name: bool,
}

/// Reads the [`Facts`] of an X.509 certificate (RFC 5280, section 4.1), or `None` if it is
/// not one this can read.
pub(super) fn read(der: &[u8]) -> Option<Facts> {
    let (certificate, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(certificate, SEQUENCE)?;
    let mut fields = tbs;
    if fields.first() == Some(&EXPLICIT_VERSION) {
        fields = element(fields)?.2;
    }
    let (_serial, _, fields) = element(fields)?;
    let (_signature, _, fields) = element(fields)?;
    let (_issuer, _, fields) = element(fields)?;
    let (validity, fields) = expect(fields, SEQUENCE)?;
    let (subject, fields) = expect(fields, SEQUENCE)?;
    let (_key, _, mut fields) = element(fields)?;
    let (not_before, validity) = time(validity)?;
    let (not_after, _) = time(validity)?;
    let mut has_subject_alt_name = false;
    // The issuer's and subject's unique IDs may come first; the extensions are last.
    while !fields.is_empty() {
        let (tag, contents, rest) = element(fields)?;
        if tag == EXPLICIT_EXTENSIONS {
            has_subject_alt_name = has_extension(contents, SUBJECT_ALT_NAME)?;
        }
        fields = rest;
    }
    Some(Facts {
        not_before,
        not_after,
        common_name: common_name(subject)?,
        has_subject_alt_name,
    })
}

/// One DER element at the start of `input`: its tag, its contents, and what follows it.
/// Definite lengths only, as DER requires.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        // Four length bytes say up to 4 GiB, far beyond any certificate.
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |length, &b| length << 8 | usize::from(b))
    };
    if rest.len() < length {
        return None;
    }
    let (contents, after) = rest.split_at(length);
    Some((tag, contents, after))
}

/// The element at the start of `input` if it has `tag`: its contents and what follows.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, contents, rest) = element(input)?;
    (found == tag).then_some((contents, rest))
}

/// Whether the contents of `[3]` hold an extension with the identifier `id`.
fn has_extension(explicit: &[u8], id: &[u8]) -> Option<bool> {
    let (mut extensions, _) = expect(explicit, SEQUENCE)?;
    while !extensions.is_empty() {
        let (extension, rest) = expect(extensions, SEQUENCE)?;
        let (found, _) = expect(extension, OBJECT_IDENTIFIER)?;
        if found == id {
            return Some(true);
        }
        extensions = rest;
    }
    Some(false)
}

/// The last commonName of a Name (a SEQUENCE OF SET OF `{ type, value }`), if it has one
/// written as text; `None` only if the Name cannot be read.
fn common_name(mut name: &[u8]) -> Option<Option<String>> {
    let mut found = None;
    while !name.is_empty() {
        let (mut set, rest) = expect(name, SET)?;
        name = rest;
        while !set.is_empty() {
            let (attribute, rest) = expect(set, SEQUENCE)?;
            set = rest;
            let (id, value) = expect(attribute, OBJECT_IDENTIFIER)?;
            if id != COMMON_NAME {
                continue;
            }
            let (tag, text, _) = element(value)?;
            found = TEXT_TAGS
                .contains(&tag)
                .then(|| String::from_utf8(text.to_vec()).ok())
                .flatten();
        }
    }
    Some(found)
}

/// A UTCTime or GeneralizedTime in the form RFC 5280 requires (seconds, `Z`), as seconds
/// since the Unix epoch, and what follows it.
fn time(input: &[u8]) -> Option<(u64, &[u8])> {
    let (tag, text, rest) = element(input)?;
    let text = text.strip_suffix(b"Z")?;
    let (year, text) = match tag {
        // RFC 5280, 4.1.2.5.1: two digits, 50 and above in the 1900s.
        UTC_TIME => {
            let yy = number(text.get(..2)?)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        GENERALIZED_TIME => (number(text.get(..4)?)?, &text[4..]),
        _ => return None,
    };
    if text.len() != 10 {
        return None;
    }
    let field = |at: usize| number(&text[at..at + 2]);
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let seconds = days_since_epoch(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second;
    Some((u64::try_from(seconds).unwrap_or(0), rest))
}

/// ASCII digits as a number.
fn number(digits: &[u8]) -> Option<i64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, &d| n * 10 + i64::from(d - b'0')))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar. Counted in 400-year
/// eras (146,097 days each) of years that start on 1 March, so the leap day is the last day
/// of its year and each month's first day is a fixed formula of its place after March.
fn days_since_epoch(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719,468 days from 0000-03-01 to 1970-01-01.
    era * 146_097 + day_of_era - 719_468
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn dates_count_days_from_the_epoch() {
        assert_eq!(days_since_epoch(1970, 1, 1), 0);
        assert_eq!(days_since_epoch(2000, 1, 1), 10_957);
        assert_eq!(days_since_epoch(2000, 3, 1), 11_017, "2000 is a leap year");
        assert_eq!(
            days_since_epoch(2100, 3, 1) - days_since_epoch(2100, 2, 28),
            1
        );
        assert_eq!(days_since_epoch(1969, 12, 31), -1);
    }

    fn made(
        params: impl FnOnce(&mut rcgen::CertificateParams),
    ) -> rustls::pki_types::CertificateDer<'static> {
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params(&mut p);
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn reads_validity_in_both_time_forms_the_common_name_and_the_alt_name() {
        let der = made(|p| {
            // UTCTime before 2050, GeneralizedTime from then on (RFC 5280).
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(2100, 1, 1);
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name
                .push(rcgen::DnType::CommonName, "example.test");
        });
        let facts = read(&der).unwrap();
        assert_eq!(facts.not_before, 946_684_800);
        assert_eq!(facts.not_after, 4_102_444_800);
        assert_eq!(facts.common_name.as_deref(), Some("example.test"));
        assert!(facts.has_subject_alt_name);

        let no_alt_name = made(|p| p.subject_alt_names.clear());
        assert!(!read(&no_alt_name).unwrap().has_subject_alt_name);
    }

    #[test]
    fn what_is_not_a_certificate_reads_as_none() {
        let der = made(|_| {});
        for cut in [0, 1, 10, der.len() / 2, der.len() - 1] {
            assert_eq!(read(&der[..cut]), None, "cut at {cut}");
        }
        assert_eq!(read(b"not DER at all"), None);
    }
}
