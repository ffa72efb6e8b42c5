//! Query strings and form bodies of the console, parsed and validated before anything reads
//! the broker: a bad value is a one-line reason for a 400, never a panic.

use std::collections::BTreeMap;

/// Longest query string or form body accepted.
pub const MAX_PARAMS_LEN: usize = 8 * 1024;
/// Most records the message browser shows at once.
pub const MAX_RECORDS: usize = 100;
/// Records shown when the request does not say.
pub const DEFAULT_RECORDS: usize = 20;
/// Largest fetch the message browser makes (the Fetch request's `max_bytes`).
pub const MAX_FETCH_BYTES: usize = 1024 * 1024;
/// Fetch size when the request does not say.
pub const DEFAULT_FETCH_BYTES: usize = 256 * 1024;
/// Smallest fetch size accepted.
pub const MIN_FETCH_BYTES: usize = 1024;

/// A parameter that does not parse or is out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadParam(pub String);

impl std::fmt::Display for BadParam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(msg: impl Into<String>) -> BadParam {
    BadParam(msg.into())
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a space).
pub fn percent_decode(s: &str) -> Result<String, BadParam> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_val);
                let lo = bytes.get(i + 2).copied().and_then(hex_val);
                match (hi, lo) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => return Err(bad("bad percent-encoding in parameters")),
                }
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| bad("parameters are not UTF-8"))
}

/// Parsed parameters: each name at most once, every name one the page knows.
#[derive(Debug, Default)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// Parses `raw` (a query string or form body), allowing only the names in `allowed`.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Params, BadParam> {
        let raw = raw.unwrap_or("");
        if raw.len() > MAX_PARAMS_LEN {
            return Err(bad(format!(
                "parameters longer than {MAX_PARAMS_LEN} bytes"
            )));
        }
        let mut map = BTreeMap::new();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_decode(k)?;
            let v = percent_decode(v)?;
            if !allowed.contains(&k.as_str()) {
                return Err(bad(format!("unknown parameter '{}'", shorten(&k))));
            }
            if map.insert(k.clone(), v).is_some() {
                return Err(bad(format!("parameter '{k}' given twice")));
            }
        }
        Ok(Params(map))
    }

    /// The value of `name`, `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// An integer in `min..=max`, `default` when absent.
    pub fn int(&self, name: &str, min: i64, max: i64, default: i64) -> Result<i64, BadParam> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => {
                let n: i64 = v
                    .parse()
                    .map_err(|_| bad(format!("{name} must be an integer, got '{}'", shorten(v))))?;
                if n < min || n > max {
                    return Err(bad(format!("{name} must be between {min} and {max}")));
                }
                Ok(n)
            }
        }
    }

    /// An integer in `min..=max` that must be present.
    pub fn required_int(&self, name: &str, min: i64, max: i64) -> Result<i64, BadParam> {
        if self.get(name).is_none() {
            return Err(bad(format!("{name} is required")));
        }
        self.int(name, min, max, min)
    }

    /// One of `choices`, `default` when absent.
    pub fn choice<'a>(
        &self,
        name: &str,
        choices: &[&'a str],
        default: &'a str,
    ) -> Result<&'a str, BadParam> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => choices.iter().find(|c| **c == v).copied().ok_or_else(|| {
                bad(format!(
                    "{name} must be one of {}, got '{}'",
                    choices.join(", "),
                    shorten(v)
                ))
            }),
        }
    }
}

/// At most 40 characters of a value, for error messages.
fn shorten(v: &str) -> String {
    let mut s: String = v.chars().take(40).collect();
    if v.chars().count() > 40 {
        s.push('…');
    }
    s
}

/// Checks a topic name as Kafka does: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn topic_name(name: &str) -> Result<&str, BadParam> {
    if name.is_empty() || name.len() > 249 {
        return Err(bad("a topic name has 1 to 249 characters"));
    }
    if name == "." || name == ".." {
        return Err(bad("a topic name cannot be '.' or '..'"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(bad(
            "a topic name has only letters, digits, '.', '_' and '-'",
        ));
    }
    Ok(name)
}

/// Checks a group id: 1 to 255 characters, no control characters.
pub fn group_id(id: &str) -> Result<&str, BadParam> {
    if id.is_empty() || id.chars().count() > 255 {
        return Err(bad("a group id has 1 to 255 characters"));
    }
    if id.chars().any(char::is_control) {
        return Err(bad("a group id has no control characters"));
    }
    Ok(id)
}

/// Where the message browser starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// At this offset.
    Offset(i64),
    /// At the first record with a timestamp at or after this (ms since the epoch).
    Timestamp(i64),
    /// At the log start.
    Earliest,
    /// `count` records before the end.
    Latest,
}

/// How record bytes are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON if it parses, else text if UTF-8, else hex.
    Auto,
    /// UTF-8 text (hex when not UTF-8).
    Text,
    /// Pretty-printed JSON (text when it does not parse).
    Json,
    /// Hex bytes.
    Hex,
}

/// A message browser request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Browse {
    /// Partition.
    pub partition: i32,
    /// Start.
    pub from: From,
    /// Records to show, 1..=[`MAX_RECORDS`].
    pub limit: usize,
    /// The fetch's byte budget.
    pub max_bytes: usize,
    /// Display format.
    pub format: Format,
}

/// The names the message browser takes.
pub const BROWSE_PARAMS: &[&str] = &[
    "partition",
    "from",
    "offset",
    "timestamp",
    "limit",
    "max_bytes",
    "format",
];

impl Browse {
    /// Validates a message browser query.
    pub fn parse(p: &Params) -> Result<Browse, BadParam> {
        let partition = p.int("partition", 0, i64::from(i32::MAX), 0)? as i32;
        let from = match p.choice(
            "from",
            &["offset", "timestamp", "earliest", "latest"],
            "earliest",
        )? {
            "offset" => From::Offset(p.required_int("offset", 0, i64::MAX)?),
            "timestamp" => From::Timestamp(p.required_int("timestamp", 0, i64::MAX)?),
            "latest" => From::Latest,
            _ => From::Earliest,
        };
        let limit = p.int("limit", 1, MAX_RECORDS as i64, DEFAULT_RECORDS as i64)? as usize;
        let max_bytes = p.int(
            "max_bytes",
            MIN_FETCH_BYTES as i64,
            MAX_FETCH_BYTES as i64,
            DEFAULT_FETCH_BYTES as i64,
        )? as usize;
        let format = match p.choice("format", &["auto", "text", "json", "hex"], "auto")? {
            "text" => Format::Text,
            "json" => Format::Json,
            "hex" => Format::Hex,
            _ => Format::Auto,
        };
        Ok(Browse {
            partition,
            from,
            limit,
            max_bytes,
            format,
        })
    }

    /// The format's name in a query string.
    pub fn format_name(&self) -> &'static str {
        match self.format {
            Format::Auto => "auto",
            Format::Text => "text",
            Format::Json => "json",
            Format::Hex => "hex",
        }
    }
}

/// Encodes a query-string or path component.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn browse(q: &str) -> Result<Browse, BadParam> {
        Browse::parse(&Params::parse(Some(q), BROWSE_PARAMS)?)
    }

    #[test]
    fn browse_defaults_and_values() {
        let b = browse("").expect("defaults");
        assert_eq!(b.partition, 0);
        assert_eq!(b.from, From::Earliest);
        assert_eq!(b.limit, DEFAULT_RECORDS);
        assert_eq!(b.max_bytes, DEFAULT_FETCH_BYTES);
        assert_eq!(b.format, Format::Auto);
        let b = browse("partition=2&from=offset&offset=17&limit=5&format=hex").expect("ok");
        assert_eq!(
            (b.partition, b.from, b.limit, b.format),
            (2, From::Offset(17), 5, Format::Hex)
        );
        let b = browse("from=timestamp&timestamp=1700000000000").expect("ok");
        assert_eq!(b.from, From::Timestamp(1_700_000_000_000));
        // Empty fields from a form are absent ones.
        let b = browse("from=earliest&offset=&timestamp=").expect("ok");
        assert_eq!(b.from, From::Earliest);
    }

    #[test]
    fn bad_browse_parameters_are_refused_with_a_reason() {
        for (q, reason) in [
            ("limit=0", "limit must be between 1 and 100"),
            ("limit=101", "limit must be between 1 and 100"),
            ("limit=abc", "limit must be an integer, got 'abc'"),
            ("partition=-1", "partition must be between 0 and 2147483647"),
            (
                "partition=99999999999",
                "partition must be between 0 and 2147483647",
            ),
            ("from=offset", "offset is required"),
            (
                "from=offset&offset=-3",
                "offset must be between 0 and 9223372036854775807",
            ),
            (
                "from=yesterday",
                "from must be one of offset, timestamp, earliest, latest, got 'yesterday'",
            ),
            ("max_bytes=1", "max_bytes must be between 1024 and 1048576"),
            (
                "format=xml",
                "format must be one of auto, text, json, hex, got 'xml'",
            ),
            ("bogus=1", "unknown parameter 'bogus'"),
            ("limit=1&limit=2", "parameter 'limit' given twice"),
            ("limit=%zz", "bad percent-encoding in parameters"),
            ("limit=%ff", "parameters are not UTF-8"),
            (
                "from=offset&offset=99999999999999999999999",
                "offset must be an integer, got '99999999999999999999999'",
            ),
        ] {
            assert_eq!(browse(q), Err(BadParam(reason.to_string())), "{q}");
        }
        let long = "a".repeat(MAX_PARAMS_LEN + 1);
        assert!(Params::parse(Some(&long), BROWSE_PARAMS).is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(topic_name("orders.v1_x-2").is_ok());
        for bad in ["", ".", "..", "a b", "<script>", "ä", &"x".repeat(250)] {
            assert!(topic_name(bad).is_err(), "{bad}");
        }
        assert!(group_id("my group ☃").is_ok());
        assert!(group_id("").is_err());
        assert!(group_id("a\nb").is_err());
        assert!(group_id(&"g".repeat(256)).is_err());
    }

    #[test]
    fn percent_coding_round_trips() {
        for s in ["a b&c=d", "<script>", "☃/?#%+"] {
            assert_eq!(percent_decode(&percent_encode(s)).expect("decodes"), s);
        }
        assert_eq!(percent_decode("a+b%20c").expect("ok"), "a b c");
    }
}
