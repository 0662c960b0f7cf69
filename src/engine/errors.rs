//! Errors grouped by cause: an integration's transactions in Error told
//! apart by what failed and how, so that a person handles ten thousand
//! failures of one cause at once instead of one by one.
//!
//! # The rule
//! A transaction's cause ([`Cause::of`]) is three things:
//! - **the endpoint**: its flow's target (none for a flow no longer
//!   configured);
//! - **the status**: the HTTP status its answer names, as the `http` target
//!   writes a failure (`POST URL: 422 ANSWER`), if it names one;
//! - **the answer masked** ([`mask`]), so that what varies from record to
//!   record does not split a cause: a run of digits becomes `#`; a UUID or a
//!   hex id (8 or more hex digits, with a digit and a letter) `<id>`; a
//!   quoted value, `'…'` or `"…"` around a word without whitespace, `'…'` or
//!   `"…"`. Quoted text with whitespace is a message (the `"error"` of a
//!   JSON answer), kept with its own numbers, ids and quoted values masked;
//!   a quoted word followed by `:` is a JSON key, a name, kept.
//!
//! A group's id ([`Cause::group`]) is the first 12 hex digits of the SHA-256
//! of `endpoint \n status \n masked`: short, URL-safe, and the same on every
//! node and after every restart, since it comes from what is stored alone.
//!
//! # Invariants
//! - Pure: no I/O. The site reads its store page by page and acts on a
//!   group through the model's rule (`engine/site/errors.rs`).
//! - Memory: grouping keeps one entry per group (its count, its ranges and
//!   its latest answer), never one per transaction.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::model::Millis;
use crate::store::ErrorTx;

/// The characters of an answer masked, at most: an answer is cut at 2 KiB
/// by the targets already, and what tells causes apart comes first.
pub const MASK_MAX: usize = 4096;

/// What a transaction failed of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// Its flow's target; `None` for a flow no longer configured.
    pub endpoint: Option<String>,
    /// The HTTP status its answer names.
    pub status: Option<u16>,
    /// The answer with numbers, ids and quoted values masked.
    pub masked: String,
}

impl Cause {
    /// The cause of a failure at `endpoint` answered `answer`.
    pub fn of(endpoint: Option<&str>, answer: &str) -> Cause {
        Cause {
            endpoint: endpoint.map(str::to_string),
            status: status(answer),
            masked: mask(answer),
        }
    }

    /// The group's id: 12 hex digits of the SHA-256 of `endpoint \n status
    /// \n masked`.
    pub fn group(&self) -> String {
        let status = self.status.map(|s| s.to_string()).unwrap_or_default();
        let digest = Sha256::digest(format!(
            "{}\n{status}\n{}",
            self.endpoint.as_deref().unwrap_or(""),
            self.masked
        ));
        digest[..6].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Whether `group` has the shape of a group's id (12 lowercase hex digits).
pub fn is_group_id(group: &str) -> bool {
    group.len() == 12
        && group
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The HTTP status a failure's text names: the first `: NNN` followed by
/// whitespace or the end, NNN from 100 to 599 (`POST http://h/x: 422 {…}`).
/// A URL holds no `": "`, so the status is the one after the request.
pub fn status(answer: &str) -> Option<u16> {
    let bytes = answer.as_bytes();
    answer.match_indices(": ").find_map(|(i, _)| {
        let digits = bytes.get(i + 2..i + 5)?;
        let after = bytes.get(i + 5);
        if !digits.iter().all(u8::is_ascii_digit) || after.is_some_and(|b| !b.is_ascii_whitespace())
        {
            return None;
        }
        let n: u16 = std::str::from_utf8(digits).ok()?.parse().ok()?;
        (100..=599).contains(&n).then_some(n)
    })
}

/// The answer with what varies from record to record masked (see the
/// module's rule); the first [`MASK_MAX`] characters of it.
pub fn mask(answer: &str) -> String {
    let chars: Vec<char> = answer.chars().take(MASK_MAX).collect();
    let mut out = String::with_capacity(answer.len().min(MASK_MAX));
    mask_into(&chars, &mut out);
    out
}

/// A letter or a digit: what ids, numbers and quoted values must not touch
/// on the outside (`doesn't` holds no quote; `req_3f2a9c1e` an id).
fn is_word(c: char) -> bool {
    c.is_alphanumeric()
}

fn mask_into(c: &[char], out: &mut String) {
    // A quote of each kind that has no closing one after it has none after
    // a later one either: looked for once, not again at each.
    let mut unclosed = [false; 2];
    let mut i = 0;
    while i < c.len() {
        let at_start = i == 0 || !is_word(c[i - 1]);
        let quote = match c[i] {
            '"' => Some(0),
            '\'' => Some(1),
            _ => None,
        };
        if let (true, Some(kind)) = (at_start, quote) {
            if !unclosed[kind] {
                match closing(c, i) {
                    Some(end) => {
                        let inner = &c[i + 1..end];
                        let key = kind == 0
                            && c[end + 1..].iter().find(|ch| !ch.is_whitespace()) == Some(&':');
                        out.push(c[i]);
                        if inner.is_empty() || key || inner.iter().any(|ch| ch.is_whitespace()) {
                            mask_into(inner, out);
                        } else {
                            out.push('…');
                        }
                        out.push(c[i]);
                        i = end + 1;
                        continue;
                    }
                    None => unclosed[kind] = true,
                }
            }
        }
        if at_start {
            if let Some(len) = id_len(&c[i..]) {
                out.push_str("<id>");
                i += len;
                continue;
            }
        }
        if c[i].is_ascii_digit() {
            while i < c.len() && c[i].is_ascii_digit() {
                i += 1;
            }
            out.push('#');
            continue;
        }
        out.push(c[i]);
        i += 1;
    }
}

/// The quote that closes the one at `open`: the next of its kind, not
/// escaped by a backslash, with no letter or digit right after it.
fn closing(c: &[char], open: usize) -> Option<usize> {
    let quote = c[open];
    let mut j = open + 1;
    while j < c.len() {
        match c[j] {
            '\\' => j += 2,
            q if q == quote && c.get(j + 1).is_none_or(|n| !is_word(*n)) => return Some(j),
            _ => j += 1,
        }
    }
    None
}

/// The length of the UUID or hex id `c` starts with, if it does and it
/// ends at a boundary (not followed by a letter or digit).
fn id_len(c: &[char]) -> Option<usize> {
    let hex_run = |from: usize| {
        c[from.min(c.len())..]
            .iter()
            .take_while(|ch| ch.is_ascii_hexdigit())
            .count()
    };
    let ends_at = |n: usize| c.get(n).is_none_or(|ch| !is_word(*ch));
    // 8-4-4-4-12
    let mut at = 0;
    let mut uuid = true;
    for (k, len) in [8, 4, 4, 4, 12].into_iter().enumerate() {
        if hex_run(at) < len || (k < 4 && c.get(at + len) != Some(&'-')) {
            uuid = false;
            break;
        }
        at += len + usize::from(k < 4);
    }
    if uuid && ends_at(at) {
        return Some(at);
    }
    let n = hex_run(0);
    let run = &c[..n];
    let mixed =
        run.iter().any(char::is_ascii_digit) && run.iter().any(|ch| ch.is_ascii_alphabetic());
    (n >= 8 && mixed && ends_at(n)).then_some(n)
}

/// An integration's transactions in Error of one cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorGroup {
    /// Its id ([`Cause::group`]).
    pub group: String,
    pub cause: Cause,
    /// How many transactions are in it.
    pub count: i64,
    /// Its lowest and highest sequence numbers.
    pub first_seq: i64,
    pub last_seq: i64,
    /// When the earliest and the latest of them failed.
    pub first_at: Millis,
    pub last_at: Millis,
    /// The latest answer (of the transaction that failed last), in full.
    pub sample: String,
    /// The sequence number of the sample's transaction.
    sample_seq: i64,
}

/// Transactions in Error added one by one (in any order), gathered into
/// their groups.
#[derive(Debug, Default)]
pub struct Grouping {
    groups: HashMap<String, ErrorGroup>,
}

impl Grouping {
    /// Adds one transaction that failed at `endpoint`.
    pub fn add(&mut self, endpoint: Option<&str>, tx: &ErrorTx) {
        let answer = tx.last_error.as_deref().unwrap_or("");
        let cause = Cause::of(endpoint, answer);
        let id = cause.group();
        let g = self.groups.entry(id.clone()).or_insert_with(|| ErrorGroup {
            group: id,
            cause,
            count: 0,
            first_seq: tx.seq,
            last_seq: tx.seq,
            first_at: tx.updated_at,
            last_at: tx.updated_at,
            sample: answer.to_string(),
            sample_seq: tx.seq,
        });
        g.count += 1;
        g.first_seq = g.first_seq.min(tx.seq);
        g.last_seq = g.last_seq.max(tx.seq);
        g.first_at = g.first_at.min(tx.updated_at);
        if (tx.updated_at, tx.seq) > (g.last_at, g.sample_seq) {
            g.sample = answer.to_string();
            g.sample_seq = tx.seq;
        }
        g.last_at = g.last_at.max(tx.updated_at);
    }

    /// The groups, the largest first (then by their first transaction).
    pub fn into_groups(self) -> Vec<ErrorGroup> {
        let mut groups: Vec<ErrorGroup> = self.groups.into_values().collect();
        groups.sort_by_key(|g| (std::cmp::Reverse(g.count), g.first_seq));
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_become_one_mark_a_run() {
        assert_eq!(mask("order 17 of 2024: 3 items"), "order # of #: # items");
        assert_eq!(mask("total 12.50, o17"), "total #.#, o#");
        assert_eq!(
            mask("POST http://127.0.0.1:4000/records: 422"),
            "POST http://#.#.#.#:#/records: #"
        );
    }

    #[test]
    fn uuids_and_hex_ids_become_one_mark() {
        assert_eq!(
            mask("request 3f2a9c1e-7b4d-4e2a-9f1c-0a1b2c3d4e5f failed"),
            "request <id> failed"
        );
        assert_eq!(
            mask("object 507f1f77bcf86cd799439011 and req_3f2a9c1e4b"),
            "object <id> and req_<id>"
        );
        // Digits only: a number; letters only: a word; short: a number
        // and a word; inside a word: not an id.
        assert_eq!(mask("12345678"), "#");
        assert_eq!(mask("deadbeefcafe"), "deadbeefcafe");
        assert_eq!(mask("ab12"), "ab#");
        assert_eq!(mask("x3f2a9c1e"), "x#f#a#c#e");
        // An upper-case UUID, and one cut short (not a UUID: its parts).
        assert_eq!(mask("3F2A9C1E-7B4D-4E2A-9F1C-0A1B2C3D4E5F."), "<id>.");
        assert_eq!(mask("3f2a9c1e-7b4d"), "<id>-#b#d");
    }

    #[test]
    fn quoted_values_are_masked_and_messages_kept() {
        assert_eq!(mask("customer 'C-17' unknown"), "customer '…' unknown");
        assert_eq!(
            mask(r#"field "email" must be valid, got "x@y.example""#),
            r#"field "…" must be valid, got "…""#
        );
        // JSON: keys kept, a value word masked, a message kept with its
        // numbers masked.
        assert_eq!(
            mask(r#"{"error": "customer 4417 does not exist", "code":"E_CUST", "id": 9}"#),
            r#"{"error": "customer # does not exist", "code":"…", "id": #}"#
        );
        // A quoted value inside a message.
        assert_eq!(
            mask(r#"{"error":"customer 'C-17' is closed"}"#),
            r#"{"error":"customer '…' is closed"}"#
        );
        // Apostrophes are not quotes; an escaped quote does not close.
        assert_eq!(mask("doesn't match 'abc'"), "doesn't match '…'");
        assert_eq!(
            mask(r#"{"error":"say \"hi\" to 3"}"#),
            r#"{"error":"say \"hi\" to #"}"#
        );
        // Empty quotes, and a quote never closed, stay as they are.
        assert_eq!(mask(r#"got "" and "open 5"#), r#"got "" and "open #"#);
    }

    #[test]
    fn varying_answers_of_one_cause_mask_alike() {
        let one = |id: u32, uuid: &str, name: &str| {
            mask(&format!(
                "POST http://127.0.0.1:4000/records: 422 {{\"error\": \"order o{id}: customer {} \
                 unknown (request {uuid})\", \"customer\": \"{name}\"}}",
                id * 7
            ))
        };
        let a = one(1, "3f2a9c1e-7b4d-4e2a-9f1c-0a1b2c3d4e5f", "ann");
        let b = one(
            1234,
            "00000000-0000-4000-8000-0000000000ab",
            "bob.smith@example.com",
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            mask("POST http://127.0.0.1:4000/records: 422 {\"error\": \"amount too large\"}")
        );
    }

    #[test]
    fn the_status_is_the_one_after_the_request() {
        assert_eq!(
            status("POST http://127.0.0.1:4000/records: 422 {\"error\": \"x\"}"),
            Some(422)
        );
        assert_eq!(status("PUT http://h:8080/a/7: 409 "), Some(409));
        assert_eq!(status("PUT http://h:8080/a/7: 404"), Some(404));
        assert_eq!(status("POST http://h/x: 200 but no id at /id"), Some(200));
        assert_eq!(status("flow 'web' is no longer configured"), None);
        assert_eq!(status("amqp: 4040 refused"), None);
        assert_eq!(status("time: 999 units"), None);
        assert_eq!(status(""), None);
    }

    #[test]
    fn a_group_id_is_short_url_safe_and_stable() {
        let c = Cause::of(Some("crm"), "POST http://h/x: 422 no such customer 17");
        let id = c.group();
        assert!(is_group_id(&id), "{id}");
        // The same on every node and after every restart: a function of
        // what is stored alone (the SHA-256 of "crm\n422\nPOST …").
        assert_eq!(
            id,
            Cause::of(Some("crm"), "POST http://h/x: 422 no such customer 98").group()
        );
        let digest = Sha256::digest("crm\n422\nPOST http://h/x: # no such customer #");
        assert_eq!(id, format!("{digest:x}")[..12]);
        // Each part tells groups apart.
        assert_ne!(
            id,
            Cause::of(Some("erp"), "POST http://h/x: 422 no such customer 17").group()
        );
        assert_ne!(
            id,
            Cause::of(Some("crm"), "POST http://h/x: 423 no such customer 17").group()
        );
        assert_ne!(
            id,
            Cause::of(None, "POST http://h/x: 422 no such customer 17").group()
        );
        assert_ne!(
            id,
            Cause::of(Some("crm"), "POST http://h/x: 422 no such order 17").group()
        );
        assert!(!is_group_id("0123456789AB"));
        assert!(!is_group_id("0123456789a"));
        assert!(!is_group_id("../../etc/pa"));
    }

    fn tx(seq: i64, at: Millis, error: &str) -> ErrorTx {
        ErrorTx {
            seq,
            flow: "web".into(),
            updated_at: at,
            last_error: Some(error.into()),
        }
    }

    #[test]
    fn grouping_counts_ranges_and_the_latest_answer() {
        let mut g = Grouping::default();
        g.add(Some("crm"), &tx(5, 100, "x: 422 customer 5 unknown"));
        g.add(Some("crm"), &tx(2, 300, "x: 422 amount too large"));
        g.add(Some("crm"), &tx(9, 200, "x: 422 customer 9 unknown"));
        g.add(Some("crm"), &tx(7, 50, "x: 422 customer 7 unknown"));
        g.add(Some("crm"), &tx(3, 200, "x: 422 customer 3 unknown"));
        let groups = g.into_groups();
        assert_eq!(groups.len(), 2);
        let customers = &groups[0];
        assert_eq!(customers.count, 4);
        assert_eq!((customers.first_seq, customers.last_seq), (3, 9));
        assert_eq!((customers.first_at, customers.last_at), (50, 200));
        // The latest failure; of two at once, the later transaction.
        assert_eq!(customers.sample, "x: 422 customer 9 unknown");
        assert_eq!(customers.cause.status, Some(422));
        assert_eq!(customers.cause.masked, "x: # customer # unknown");
        assert_eq!(customers.cause.endpoint.as_deref(), Some("crm"));
        let amount = &groups[1];
        assert_eq!((amount.count, amount.first_seq, amount.last_seq), (1, 2, 2));
        assert_eq!(amount.sample, "x: 422 amount too large");
    }

    #[test]
    fn masking_a_long_answer_is_bounded() {
        let long = "'".repeat(100_000) + &"\"a b".repeat(10_000);
        let started = std::time::Instant::now();
        let masked = mask(&long);
        assert!(masked.chars().count() <= MASK_MAX);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
