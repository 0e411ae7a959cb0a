//! Writing SNS query-protocol XML responses.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::sns::error::XMLNS;

/// Escapes text for XML content.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
    out
}

/// A fresh request id (UUID form).
pub fn request_id() -> String {
    uuid()
}

/// A random UUID v4 string.
pub fn uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Builds the inside of an `<{Action}Result>` element.
#[derive(Debug, Default)]
pub struct Xml(String);

impl Xml {
    /// An empty result.
    pub fn new() -> Xml {
        Xml(String::new())
    }

    /// `<name>value</name>`, escaped.
    pub fn field(&mut self, name: &str, value: &str) -> &mut Xml {
        self.0.push_str(&format!("<{name}>{}</{name}>", esc(value)));
        self
    }

    /// `<name>` + inner + `</name>`.
    pub fn element(&mut self, name: &str, inner: impl FnOnce(&mut Xml)) -> &mut Xml {
        self.0.push_str(&format!("<{name}>"));
        inner(self);
        self.0.push_str(&format!("</{name}>"));
        self
    }

    /// `<name><entry><key>k</key><value>v</value></entry>...</name>`.
    pub fn entries<'a>(&mut self, name: &str, map: impl IntoIterator<Item = (&'a String, &'a String)>) -> &mut Xml {
        self.element(name, |x| {
            for (k, v) in map {
                x.element("entry", |e| {
                    e.field("key", k).field("value", v);
                });
            }
        })
    }

    /// The XML text.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// A successful response for `action` with result content `result`.
pub fn ok(action: &str, result: Xml) -> Response {
    let result = result.into_string();
    // Always present: SDKs unwrap `<{Action}Result>` even for empty results (TagResource).
    let result = format!("<{action}Result>{result}</{action}Result>");
    let body = format!(
        "<{action}Response xmlns=\"{XMLNS}\">{result}<ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{action}Response>",
        request_id()
    );
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert("content-type", HeaderValue::from_static("text/xml"));
    resp
}
