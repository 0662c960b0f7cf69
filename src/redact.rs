//! URLs as sluice shows them: without the user-info.
//!
//! # Invariant
//! Every URL that sluice prints, logs, stores or answers goes through
//! [`url`] first, so `http://user:PASSWORD@host/x` is never seen as more
//! than `http://***@host/x`. The URL as configured is still what requests
//! are sent to (reqwest turns its user-info into Basic authentication).

/// `url` with its user-info (`user:password@`) replaced by `***@`.
///
/// A URL with a host is shown as the parser writes it when it had
/// user-info, and exactly as given otherwise. Anything else (text that
/// does not parse, which a configuration error quotes, or parses without a
/// host, like `user:pw@host`) is redacted by hand, erring on the side of
/// hiding: everything from after `://` (or the start) up to the last `@`.
pub fn url(url: &str) -> String {
    if let Ok(mut parsed) = reqwest::Url::parse(url) {
        if parsed.has_host() {
            if parsed.username().is_empty() && parsed.password().is_none() {
                return url.to_string();
            }
            if parsed.set_username("***").is_ok() && parsed.set_password(None).is_ok() {
                return parsed.to_string();
            }
        }
    }
    let Some(at) = url.rfind('@') else {
        return url.to_string();
    };
    let start = match url.find("://") {
        Some(i) if i < at => i + 3,
        _ => 0,
    };
    format!("{}***{}", &url[..start], &url[at..])
}

/// `text` with the user-info of every `scheme://…@` in it hidden, for
/// messages that may quote a value from the configuration file. Errs on
/// the side of hiding: up to the last `@` before the next blank or quote.
pub fn urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '`' | '<' | '>'))
            .unwrap_or(tail.len());
        let token = &tail[..end];
        match token.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&token[at..]);
            }
            None => out.push_str(token),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::{url, urls_in};

    #[test]
    fn urls_quoted_in_a_message_are_hidden() {
        assert_eq!(
            urls_in("invalid type: string \"http://u:S3cret@h/x\", expected usize"),
            "invalid type: string \"http://***@h/x\", expected usize"
        );
        assert_eq!(
            urls_in("a http://h/x and 'https://a:b@c' end"),
            "a http://h/x and 'https://***@c' end"
        );
        assert_eq!(urls_in("no url here"), "no url here");
    }

    #[test]
    fn user_info_is_hidden() {
        assert_eq!(
            url("http://user:S3cret@127.0.0.1:9/records"),
            "http://***@127.0.0.1:9/records"
        );
        assert_eq!(url("https://user@h/x"), "https://***@h/x");
        assert_eq!(url("https://:pw@h/x?q=1"), "https://***@h/x?q=1");
        // No user-info: exactly as written.
        assert_eq!(url("http://h:1/records"), "http://h:1/records");
        assert_eq!(url("http://h/a@b"), "http://h/a@b");
        assert_eq!(url("not a url"), "not a url");
    }

    #[test]
    fn text_that_does_not_parse_is_hidden_too() {
        for (given, shown) in [
            // A bad port.
            ("http://user:S3cret@host:99999/x", "http://***@host:99999/x"),
            // A slash in the password ends the authority for a parser.
            ("http://user:pa/ss@host:x/y", "http://***@host:x/y"),
            // Parses, as a path of the scheme `user`.
            ("user:S3cret@host", "***@host"),
            ("ftp:user:S3cret@[bad", "***@[bad"),
        ] {
            let got = url(given);
            assert_eq!(got, shown, "{given}");
            assert!(!got.contains("S3cret") && !got.contains("ss@"), "{got}");
        }
    }
}
