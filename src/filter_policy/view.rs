//! A message as filter policies see it: typed attribute values and the JSON body.
//!
//! Attributes are the message's headers. Their SNS type comes from the header's own type
//! (integers and floats are `Number`, arrays are `String.Array`, bytes are `Binary`) or, for
//! text headers, from the type annotation header `x-sqs-type.<name>` that the AWS front-end
//! writes (`Number`, `Number.<custom>`, `String.Array`; see `docs/conversion.md`). The view is
//! built once per publish and shared by every subscription's evaluation; the body is parsed
//! as JSON at most once, and only if a `MessageBody` policy asks.

use std::cell::OnceCell;
use std::ops::Bound;

use crate::message::{FieldTable, FieldValue};

/// Prefix of the header that records an attribute's SNS/SQS data type.
pub const TYPE_HEADER_PREFIX: &str = "x-sqs-type.";

/// One scalar value a condition is tested against.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// A string.
    Str(&'a str),
    /// A number.
    Num(f64),
    /// A JSON boolean.
    Bool(bool),
    /// JSON null.
    Null,
    /// Present, but nothing a condition can compare (an object, binary data, a bad number).
    Other,
}

/// A parsed attribute.
#[derive(Debug)]
enum Attr<'m> {
    Str(&'m str),
    Num(f64),
    Bool(bool),
    Json(serde_json::Value),
    Fields(&'m [FieldValue]),
    Other,
}

/// A message prepared for policy evaluation.
#[derive(Debug)]
pub struct MessageView<'m> {
    headers: Option<&'m FieldTable>,
    body: &'m [u8],
    parsed_body: OnceCell<Option<serde_json::Value>>,
    attrs: Vec<(&'m str, Attr<'m>)>,
}

impl<'m> MessageView<'m> {
    /// A view of a message with these headers and body.
    pub fn new(headers: Option<&'m FieldTable>, body: &'m [u8]) -> MessageView<'m> {
        let mut attrs = Vec::new();
        if let Some(h) = headers {
            // The type annotations sort together: read them in one range scan, no allocation.
            let types: Vec<(&str, &str)> = h
                .range::<str, _>((Bound::Included(TYPE_HEADER_PREFIX), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(TYPE_HEADER_PREFIX))
                .filter_map(|(k, v)| Some((&k[TYPE_HEADER_PREFIX.len()..], v.as_str()?)))
                .collect();
            for (k, v) in h {
                if k.starts_with(TYPE_HEADER_PREFIX) {
                    continue;
                }
                let declared = types.iter().find(|(n, _)| *n == k.as_str()).map(|(_, t)| *t);
                attrs.push((k.as_str(), attr_of(v, declared)));
            }
        }
        MessageView { headers, body, parsed_body: OnceCell::new(), attrs }
    }

    /// The headers the view reads.
    pub fn headers(&self) -> Option<&'m FieldTable> {
        self.headers
    }

    /// Pushes the values of attribute `name` onto `out`; false if there is no such attribute.
    pub fn attribute<'v>(&'v self, name: &str, out: &mut Vec<Value<'v>>) -> bool {
        let Ok(i) = self.attrs.binary_search_by(|(k, _)| (*k).cmp(name)) else { return false };
        match &self.attrs[i].1 {
            Attr::Str(s) => out.push(Value::Str(s)),
            Attr::Num(n) => out.push(Value::Num(*n)),
            Attr::Bool(b) => out.push(Value::Bool(*b)),
            Attr::Json(v) => push_json(v, out),
            Attr::Fields(list) => {
                for f in *list {
                    out.push(field_scalar(f));
                }
            }
            Attr::Other => out.push(Value::Other),
        }
        true
    }

    /// The body as JSON, parsed on first use; `None` if it is not JSON.
    pub fn body(&self) -> Option<&serde_json::Value> {
        self.parsed_body.get_or_init(|| serde_json::from_slice(self.body).ok()).as_ref()
    }
}

fn attr_of<'m>(v: &'m FieldValue, declared: Option<&str>) -> Attr<'m> {
    let base = declared.map(|t| if t == "String.Array" { t } else { t.split('.').next().unwrap_or(t) });
    match (v, base) {
        (FieldValue::Bytes(_), _) => Attr::Other,
        (FieldValue::Array(list), _) => Attr::Fields(list),
        (FieldValue::Bool(b), _) => Attr::Bool(*b),
        (FieldValue::F32(f), _) => Attr::Num(f64::from(*f)),
        (FieldValue::F64(f), _) => Attr::Num(*f),
        (other, declared) => match (other.as_str(), other.as_i64(), declared) {
            (Some(s), _, Some("Number")) => s.trim().parse::<f64>().map_or(Attr::Other, Attr::Num),
            (Some(s), _, Some("String.Array")) => serde_json::from_str(s).map_or(Attr::Other, Attr::Json),
            (Some(s), _, _) => Attr::Str(s),
            (None, Some(n), _) => Attr::Num(n as f64),
            _ => Attr::Other,
        },
    }
}

fn field_scalar(f: &FieldValue) -> Value<'_> {
    match f {
        FieldValue::Bool(b) => Value::Bool(*b),
        FieldValue::F32(x) => Value::Num(f64::from(*x)),
        FieldValue::F64(x) => Value::Num(*x),
        FieldValue::Void => Value::Null,
        other => match (other.as_str(), other.as_i64()) {
            (Some(s), _) => Value::Str(s),
            (None, Some(n)) => Value::Num(n as f64),
            _ => Value::Other,
        },
    }
}

/// Pushes a JSON value: arrays (at any depth) element by element, scalars as they are.
fn push_json<'v>(v: &'v serde_json::Value, out: &mut Vec<Value<'v>>) {
    match v {
        serde_json::Value::Array(items) => items.iter().for_each(|i| push_json(i, out)),
        serde_json::Value::String(s) => out.push(Value::Str(s)),
        serde_json::Value::Number(n) => out.push(n.as_f64().map_or(Value::Other, Value::Num)),
        serde_json::Value::Bool(b) => out.push(Value::Bool(*b)),
        serde_json::Value::Null => out.push(Value::Null),
        serde_json::Value::Object(_) => out.push(Value::Other),
    }
}

/// Pushes the values found at `path` in a JSON body, descending into arrays on the way (an
/// array of objects is searched object by object). False if the path leads nowhere.
pub fn body_values<'v>(body: &'v serde_json::Value, path: &[Box<str>], out: &mut Vec<Value<'v>>) -> bool {
    match path.split_first() {
        None => {
            push_json(body, out);
            true
        }
        Some((key, rest)) => match body {
            serde_json::Value::Object(m) => m.get(&**key).is_some_and(|v| body_values(v, rest, out)),
            serde_json::Value::Array(items) => {
                let mut found = false;
                for item in items {
                    found |= body_values(item, path, out);
                }
                found
            }
            _ => false,
        },
    }
}
