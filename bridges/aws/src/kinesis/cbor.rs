//! The CBOR variant of the protocol (`application/x-amz-cbor-1.1`), what the Java SDK and the
//! KCL send by default. A CBOR request is converted to the JSON shape the actions take (byte
//! strings become base64 text, tag-1 epoch timestamps become epoch seconds), and the JSON
//! answer is converted back: the `Data` blobs become byte strings and `*Timestamp` fields
//! become tag-1 epoch times. Decoding is ciborium's (pure Rust, bounded nesting).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ciborium::value::Value as Cbor;
use serde_json::{Map, Number, Value};

use super::KinesisError;

/// The content type of CBOR requests and answers.
pub const CONTENT_TYPE: &str = "application/x-amz-cbor-1.1";

/// Decode a CBOR request body into the JSON input shape.
pub fn decode(body: &[u8]) -> Result<Value, KinesisError> {
    if body.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let v: Cbor = ciborium::de::from_reader(body)
        .map_err(|e| KinesisError::Serialization(format!("Malformed CBOR request: {e}")))?;
    let json = to_json(v)?;
    if !json.is_object() {
        return Err(KinesisError::Serialization("Expected a CBOR map".into()));
    }
    Ok(json)
}

fn to_json(v: Cbor) -> Result<Value, KinesisError> {
    Ok(match v {
        Cbor::Null => Value::Null,
        Cbor::Bool(b) => Value::Bool(b),
        Cbor::Integer(i) => {
            let n = i128::from(i);
            match (i64::try_from(n), u64::try_from(n)) {
                (Ok(x), _) => Value::from(x),
                (_, Ok(x)) => Value::from(x),
                _ => return Err(KinesisError::Serialization("CBOR integer out of range".into())),
            }
        }
        Cbor::Float(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        Cbor::Text(s) => Value::String(s),
        Cbor::Bytes(b) => Value::String(STANDARD.encode(b)),
        // Tag 1: epoch-based date/time; other tags are read through.
        Cbor::Tag(_, inner) => to_json(*inner)?,
        Cbor::Array(a) => Value::Array(a.into_iter().map(to_json).collect::<Result<_, _>>()?),
        Cbor::Map(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let Cbor::Text(k) = k else {
                    return Err(KinesisError::Serialization("CBOR map keys must be text".into()));
                };
                out.insert(k, to_json(v)?);
            }
            Value::Object(out)
        }
        _ => return Err(KinesisError::Serialization("Unsupported CBOR value".into())),
    })
}

/// Encode an answer (JSON shape) as CBOR.
pub fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail; an error would only leave the body empty.
    let _ = ciborium::ser::into_writer(&from_json(v, None), &mut out);
    out
}

fn from_json(v: &Value, key: Option<&str>) -> Cbor {
    match v {
        Value::Null => Cbor::Null,
        Value::Bool(b) => Cbor::Bool(*b),
        Value::Number(n) if key.is_some_and(|k| k.ends_with("Timestamp")) => {
            Cbor::Tag(1, Box::new(Cbor::Float(n.as_f64().unwrap_or(0.0))))
        }
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Cbor::Integer(i.into()),
            (_, Some(u)) => Cbor::Integer(u.into()),
            _ => Cbor::Float(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) if key == Some("Data") => Cbor::Bytes(STANDARD.decode(s).unwrap_or_default()),
        Value::String(s) => Cbor::Text(s.clone()),
        Value::Array(a) => Cbor::Array(a.iter().map(|x| from_json(x, key)).collect()),
        Value::Object(m) => Cbor::Map(m.iter().map(|(k, x)| (Cbor::Text(k.clone()), from_json(x, Some(k)))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cbor(v: &Cbor) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(v, &mut out).expect("encode");
        out
    }

    #[test]
    fn requests_with_byte_strings_and_tagged_times_become_the_json_shape() {
        let req = Cbor::Map(vec![
            (Cbor::Text("StreamName".into()), Cbor::Text("s".into())),
            (Cbor::Text("Data".into()), Cbor::Bytes(b"hi".to_vec())),
            (Cbor::Text("Limit".into()), Cbor::Integer(5.into())),
            (Cbor::Text("Timestamp".into()), Cbor::Tag(1, Box::new(Cbor::Float(1.5)))),
        ]);
        let v = decode(&cbor(&req)).expect("decode");
        assert_eq!(v, json!({"StreamName": "s", "Data": "aGk=", "Limit": 5, "Timestamp": 1.5}));
    }

    #[test]
    fn answers_carry_blobs_and_timestamps_natively() {
        let out = encode(
            &json!({"Records": [{"Data": "aGk=", "ApproximateArrivalTimestamp": 2.5, "SequenceNumber": "49"}], "MillisBehindLatest": 0}),
        );
        let v: Cbor = ciborium::de::from_reader(&out[..]).expect("decode");
        let Cbor::Map(top) = v else { panic!("map") };
        let recs = top.iter().find(|(k, _)| k == &Cbor::Text("Records".into())).map(|(_, v)| v);
        let Some(Cbor::Array(recs)) = recs else { panic!("array") };
        let Cbor::Map(rec) = &recs[0] else { panic!("map") };
        assert!(rec.iter().any(|(k, v)| k == &Cbor::Text("Data".into()) && v == &Cbor::Bytes(b"hi".to_vec())));
        assert!(
            rec.iter().any(|(k, v)| {
                k == &Cbor::Text("ApproximateArrivalTimestamp".into()) && matches!(v, Cbor::Tag(1, _))
            })
        );
    }

    #[test]
    fn garbage_is_a_serialization_error() {
        assert!(matches!(decode(&[0xFF, 0x00, 0x13]), Err(KinesisError::Serialization(_))));
        assert!(matches!(decode(&cbor(&Cbor::Integer(3.into()))), Err(KinesisError::Serialization(_))));
        let bad_key = Cbor::Map(vec![(Cbor::Integer(1.into()), Cbor::Null)]);
        assert!(matches!(decode(&cbor(&bad_key)), Err(KinesisError::Serialization(_))));
        // Deep nesting is refused, not a stack overflow.
        let deep: Vec<u8> = std::iter::repeat_n(0x81u8, 100_000).chain([0x00]).collect();
        assert!(decode(&deep).is_err());
    }
}
