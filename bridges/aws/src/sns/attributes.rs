//! SNS message attributes: validation of what Publish sends, their storage as core headers
//! (the conversion table's convention, shared with SQS: text, bytes, and `x-sqs-type.<name>`
//! for types other than `String`/`Binary`), and reading them back from any message's headers
//! for the envelope.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use switchyard::filter_policy::view::TYPE_HEADER_PREFIX;
use switchyard::{FieldTable, FieldValue};

use crate::sns::error::SnsError;
use crate::sns::params::MessageAttr;

/// Headers the SNS front-end adds for itself; never shown as attributes.
pub const INTERNAL_PREFIX: &str = "x-sns-";

/// A validated attribute: SNS type and its value (base64 text for binaries in the envelope).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// `String`, `Number`, `Binary`, `String.Array`, possibly with a custom suffix.
    pub data_type: String,
    /// The string value, or for binaries the decoded bytes.
    pub value: AttrValue,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    /// String, Number, String.Array.
    Text(String),
    /// Binary.
    Bytes(Vec<u8>),
}

impl Attr {
    /// Bytes counted toward the 256 KiB message limit.
    pub fn size(&self, name: &str) -> usize {
        name.len()
            + self.data_type.len()
            + match &self.value {
                AttrValue::Text(s) => s.len(),
                AttrValue::Bytes(b) => b.len(),
            }
    }

    /// The value as the envelope shows it (binary as base64).
    pub fn envelope_value(&self) -> String {
        match &self.value {
            AttrValue::Text(s) => s.clone(),
            AttrValue::Bytes(b) => STANDARD.encode(b),
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && !name.starts_with("AWS.")
        && !name.starts_with("Amazon.")
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && !name.starts_with(INTERNAL_PREFIX)
        && !name.starts_with("x-sqs-")
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Validates Publish's message attributes, with SNS's texts.
pub fn validate(given: &BTreeMap<String, MessageAttr>) -> Result<BTreeMap<String, Attr>, SnsError> {
    let mut out = BTreeMap::new();
    for (name, a) in given {
        let bad = |why: String| SnsError::InvalidParameterValue(why);
        if !valid_name(name) {
            return Err(bad(format!("The message attribute name '{name}' is invalid.")));
        }
        if a.data_type.is_empty() {
            return Err(bad(format!("The message attribute '{name}' must contain non-empty message attribute type.")));
        }
        let base =
            if a.data_type == "String.Array" { "String.Array" } else { a.data_type.split('.').next().unwrap_or("") };
        let value = match base {
            "String" | "Number" | "String.Array" => {
                let s = a.string.as_deref().unwrap_or("");
                if s.is_empty() {
                    return Err(bad(format!(
                        "The message attribute '{name}' must contain non-empty message attribute value for message attribute type '{base}'."
                    )));
                }
                if base == "Number" && s.trim().parse::<f64>().map_or(true, |n| !n.is_finite()) {
                    return Err(bad(format!("Could not cast message attribute '{name}' value to number.")));
                }
                if base == "String.Array" && !matches!(serde_json::from_str(s), Ok(serde_json::Value::Array(_))) {
                    return Err(bad(format!(
                        "The message attribute '{name}' with type 'String.Array' must contain a valid JSON array."
                    )));
                }
                AttrValue::Text(s.to_string())
            }
            "Binary" => {
                let b64 = a.binary.as_deref().unwrap_or("");
                let bytes = STANDARD
                    .decode(b64)
                    .map_err(|_| bad(format!("The message attribute '{name}' has an invalid binary value.")))?;
                if bytes.is_empty() {
                    return Err(bad(format!(
                        "The message attribute '{name}' must contain non-empty message attribute value for message attribute type 'Binary'."
                    )));
                }
                AttrValue::Bytes(bytes)
            }
            _ => {
                return Err(bad(format!(
                    "The message attribute '{name}' has an invalid message attribute type, the set of supported type prefixes is Binary, Number, and String."
                )));
            }
        };
        out.insert(name.clone(), Attr { data_type: a.data_type.clone(), value });
    }
    Ok(out)
}

/// Writes attributes as core headers.
pub fn to_headers(attrs: &BTreeMap<String, Attr>, headers: &mut FieldTable) {
    for (k, a) in attrs {
        match &a.value {
            AttrValue::Text(s) => {
                headers.insert(k.clone(), FieldValue::text(s));
                if a.data_type != "String" {
                    headers.insert(format!("{TYPE_HEADER_PREFIX}{k}"), FieldValue::text(&a.data_type));
                }
            }
            AttrValue::Bytes(b) => {
                headers.insert(k.clone(), FieldValue::Bytes(Bytes::copy_from_slice(b)));
                if a.data_type != "Binary" {
                    headers.insert(format!("{TYPE_HEADER_PREFIX}{k}"), FieldValue::text(&a.data_type));
                }
            }
        }
    }
}

/// True for headers that are not message attributes (internal or broker bookkeeping).
pub fn is_internal(name: &str) -> bool {
    name.starts_with(INTERNAL_PREFIX)
        || name.starts_with("x-sqs-")
        || name.starts_with("x-death")
        || name.starts_with("x-first-death")
        || name.starts_with("x-last-death")
}

/// The attributes any message's headers carry (an AMQP publisher's typed headers included).
pub fn from_headers(headers: Option<&FieldTable>) -> BTreeMap<String, Attr> {
    let mut out = BTreeMap::new();
    let Some(h) = headers else { return out };
    for (k, v) in h {
        if is_internal(k) {
            continue;
        }
        let declared = h.get(&format!("{TYPE_HEADER_PREFIX}{k}")).and_then(FieldValue::as_str);
        let (ty, value) = match v {
            FieldValue::Bytes(b) => ("Binary".to_string(), AttrValue::Bytes(b.to_vec())),
            FieldValue::Bool(b) => ("String".to_string(), AttrValue::Text(b.to_string())),
            FieldValue::F32(f) => ("Number".to_string(), AttrValue::Text(f.to_string())),
            FieldValue::F64(f) => ("Number".to_string(), AttrValue::Text(f.to_string())),
            FieldValue::Array(items) => {
                let json: Vec<serde_json::Value> = items
                    .iter()
                    .map(|i| match (i.as_str(), i.as_i64()) {
                        (Some(s), _) => serde_json::Value::from(s),
                        (None, Some(n)) => serde_json::Value::from(n),
                        _ => serde_json::Value::Null,
                    })
                    .collect();
                ("String.Array".to_string(), AttrValue::Text(serde_json::Value::Array(json).to_string()))
            }
            other => match (other.as_str(), other.as_i64()) {
                (Some(s), _) => ("String".to_string(), AttrValue::Text(s.to_string())),
                (None, Some(n)) => ("Number".to_string(), AttrValue::Text(n.to_string())),
                _ => continue,
            },
        };
        out.insert(k.clone(), Attr { data_type: declared.map_or(ty, str::to_string), value });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(t: &str, s: Option<&str>, b: Option<&str>) -> MessageAttr {
        MessageAttr { data_type: t.into(), string: s.map(Into::into), binary: b.map(Into::into) }
    }

    #[test]
    fn validation_and_round_trip() {
        let mut given = BTreeMap::new();
        given.insert("s".to_string(), attr("String", Some("x"), None));
        given.insert("n".to_string(), attr("Number", Some("1.5"), None));
        given.insert("a".to_string(), attr("String.Array", Some("[\"x\", 1]"), None));
        given.insert("b".to_string(), attr("Binary", None, Some("AAE=")));
        let ok = validate(&given).expect("valid");
        let mut h = FieldTable::new();
        to_headers(&ok, &mut h);
        h.insert("x-sns-subject".into(), FieldValue::text("internal"));
        assert_eq!(from_headers(Some(&h)), ok);
        let mut bad = BTreeMap::new();
        bad.insert("n".to_string(), attr("Number", Some("abc"), None));
        assert!(matches!(validate(&bad), Err(SnsError::InvalidParameterValue(t)) if t.contains("cast")));
        bad.insert("n".to_string(), attr("Blob", Some("abc"), None));
        assert!(
            matches!(validate(&bad), Err(SnsError::InvalidParameterValue(t)) if t.contains("supported type prefixes"))
        );
        bad.insert("n".to_string(), attr("String.Array", Some("{}"), None));
        assert!(validate(&bad).is_err());
    }
}
