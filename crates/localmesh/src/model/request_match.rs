//! What a request must look like for a route to apply: path, method, authority, header and query
//! matchers, with regexes compiled to match whole values.

use regex::Regex;

/// What a request must look like; every present part must match (AND).
#[derive(Debug, Clone, Default)]
pub struct RequestMatch {
    pub path: Option<PathMatch>,
    pub method: Option<StringMatch>,
    pub authority: Option<StringMatch>,
    /// Names lower-case.
    pub headers: Vec<HeaderMatch>,
    /// Istio `withoutHeaders`: the request must not carry a matching header.
    pub without_headers: Vec<HeaderMatch>,
    pub query_params: Vec<HeaderMatch>,
    /// Istio `match.port`: the port the caller dialled.
    pub port: Option<u16>,
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(String),
    /// Gateway API `PathPrefix`: whole `/`-separated segments (`/a` matches `/a` and `/a/b`, not `/ab`).
    SegmentPrefix(String),
    /// Istio `uri.prefix`: a plain string prefix.
    Prefix(String),
    Regex(FullRegex),
}

#[derive(Debug, Clone)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Regex(FullRegex),
}

#[derive(Debug, Clone)]
pub struct HeaderMatch {
    pub name: String,
    pub value: StringMatch,
}

/// An RE2-style regex that must match the whole value, as in Envoy (`^(?:...)$`).
#[derive(Debug, Clone)]
pub struct FullRegex {
    pub source: String,
    pub(crate) regex: Regex,
}

impl FullRegex {
    pub fn new(source: &str) -> Result<Self, String> {
        let regex = Regex::new(&format!("^(?:{source})$")).map_err(|e| format!("invalid regex: {e}"))?;
        Ok(FullRegex {
            source: source.to_string(),
            regex,
        })
    }

    pub fn is_full_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}
