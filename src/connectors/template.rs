//! Names that take values of the record: an `http` url
//! (`/customers/{id}`, `/{customer.id}`, and `{link}` in `update_url`), a
//! routing key, a subject or a topic (`orders.{region}`). Each use says how
//! a value is written into it (percent-encoded in a url; checked against
//! the broker's separators in a name).

/// One piece of a template.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    /// A record field: a top-level name or a dotted path.
    Field(String),
    /// `{link}` in `update_url`.
    Link,
}

/// A text that may take values of the record.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldTemplate {
    pub parts: Vec<Part>,
}

impl FieldTemplate {
    /// `link`: whether `{link}` is the record's link (else a field).
    pub fn parse(text: &str, link: bool) -> Result<FieldTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err("a '}' without its '{'".into());
            }
            let Some(close) = rest[open..].find('}').map(|c| open + c) else {
                return Err("a '{' without its '}'".into());
            };
            let name = &rest[open + 1..close];
            if name.contains('{')
                || name.is_empty()
                || name
                    .split('.')
                    .any(|s| s.is_empty() || s.contains(char::is_whitespace))
            {
                return Err(format!(
                    "'{{{name}}}' is not a field: give a field name or a dotted path, e.g. {{id}} or {{customer.id}}"
                ));
            }
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            parts.push(if link && name == "link" {
                Part::Link
            } else {
                Part::Field(name.to_string())
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(FieldTemplate { parts })
    }

    pub fn has_placeholders(&self) -> bool {
        self.parts.iter().any(|p| !matches!(p, Part::Text(_)))
    }

    pub fn has_fields(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Field(_)))
    }

    /// The text with every placeholder filled with `x`: what must be valid
    /// as the template's kind of name.
    pub fn sample(&self) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(s) => s.as_str(),
                Part::Field(_) | Part::Link => "x",
            })
            .collect()
    }

    /// The text for `record` (parsed JSON, needed when the template has
    /// fields) and `link`, each value written by `write` (which may refuse
    /// it); `Err` names a field the record lacks, for `what` (e.g. "the
    /// url").
    pub fn render_with(
        &self,
        record: Option<&serde_json::Value>,
        link: Option<&str>,
        what: &str,
        write: impl Fn(&str) -> Result<String, String>,
    ) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(s) => out.push_str(s),
                Part::Link => out.push_str(&write(link.unwrap_or_default())?),
                Part::Field(name) => {
                    let value = record
                        .and_then(|r| field(r, name))
                        .ok_or_else(|| format!("the record has no field '{name}' for {what}"))?;
                    let text = match value {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Number(n) => n.to_string(),
                        serde_json::Value::Bool(b) => b.to_string(),
                        _ => {
                            return Err(format!(
                                "the record's field '{name}' is not a text or a number (for {what})"
                            ))
                        }
                    };
                    if text.is_empty() {
                        return Err(format!("the record's field '{name}' is empty (for {what})"));
                    }
                    out.push_str(&write(&text).map_err(|why| {
                        format!("the record's field '{name}' {why} (for {what})")
                    })?);
                }
            }
        }
        Ok(out)
    }
}

/// The value at a dotted path (`customer.id`; a number indexes an array).
fn field<'a>(record: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.')
        .try_fold(record, |v, segment| match v {
            serde_json::Value::Object(m) => m.get(segment),
            serde_json::Value::Array(a) => segment.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        })
        .filter(|v| !v.is_null())
}
