//! The AWS query protocol (form-encoded `Action=...` requests, XML responses) for SQS, as
//! older SDKs and many tools send it.
//!
//! A form is turned into the JSON protocol's input shape ([`form_to_input`]), the same
//! handler runs ([`crate::sqs::Sqs::call`]), and its JSON output is written as the query
//! protocol's XML ([`to_xml`]). Flattened names map as follows: `Attribute.N.Name/Value` →
//! `Attributes`, `AttributeName.N` → `AttributeNames` (likewise `MessageAttributeName.N`,
//! `MessageSystemAttributeName.N`), `MessageAttribute.N.Name` + `.Value.DataType/StringValue/
//! BinaryValue` → `MessageAttributes`, `<Kind>BatchRequestEntry.N.<Field>` → `Entries`,
//! `Tag.N.Key/Value` → `Tags` (`tags` for CreateQueue), `TagKey.N` → `TagKeys`,
//! `AWSAccountId.N` → `AWSAccountIds`, `ActionName.N` → `Actions`.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::error::{AwsError, shape};

/// The XML namespace of SQS query responses.
const XMLNS: &str = "http://queue.amazonaws.com/doc/2012-11-05/";

/// Parameters whose values are integers in the JSON shape.
const INTEGERS: &[&str] = &[
    "DelaySeconds",
    "MaxNumberOfMessages",
    "VisibilityTimeout",
    "WaitTimeSeconds",
    "MaxResults",
    "MaxNumberOfMessagesPerSecond",
];

/// `(Action, input)` from a form body; `path` is the request path (query requests may be
/// posted to the queue URL instead of naming `QueueUrl`).
pub fn form_to_input(body: &[u8], path: &str, host: &str) -> Result<(String, Value), AwsError> {
    let params: Vec<(String, String)> =
        form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let action = params
        .iter()
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| AwsError::MissingParameter("Action".into()))?;
    // Signature parameters of query-string authentication are not action input.
    let rest: Vec<(&str, &str)> = params
        .iter()
        .filter(|(k, _)| k != "Action" && k != "Version" && !k.starts_with("X-Amz-"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut input = build(&rest)?;
    if action == "CreateQueue"
        && let Some(tags) = input.remove("Tags")
    {
        input.insert("tags".into(), tags);
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    if !input.contains_key("QueueUrl")
        && let [account, name] = segments[..]
    {
        input.insert("QueueUrl".into(), Value::String(format!("http://{host}/{account}/{name}")));
    }
    Ok((action, Value::Object(input)))
}

/// Flattened parameters: `(name, value)` pairs.
type Params<'a> = Vec<(&'a str, &'a str)>;

/// Groups `Prefix.N.Rest` parameters by `N`, in index order.
fn by_index<'a>(params: &[(&'a str, &'a str)]) -> Result<BTreeMap<u32, Params<'a>>, AwsError> {
    let mut out: BTreeMap<u32, Params<'a>> = BTreeMap::new();
    for (k, v) in params {
        let (n, rest) = k.split_once('.').unwrap_or((k, ""));
        let n: u32 = n.parse().map_err(|_| AwsError::InvalidParameterValue(format!("Bad parameter index in {k}")))?;
        out.entry(n).or_default().push((rest, v));
    }
    Ok(out)
}

fn field<'a>(params: &[(&'a str, &'a str)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

/// Builds one JSON object from flattened parameters.
fn build(params: &[(&str, &str)]) -> Result<Map<String, Value>, AwsError> {
    let mut groups: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    let mut out = Map::new();
    for (k, v) in params {
        match k.split_once('.') {
            Some((head, rest)) => groups.entry(head).or_default().push((rest, v)),
            None => {
                let value = match v.parse::<i64>() {
                    Ok(n) if INTEGERS.contains(k) => Value::from(n),
                    _ => Value::String(v.to_string()),
                };
                out.insert(k.to_string(), value);
            }
        }
    }
    for (head, sub) in groups {
        let indexed = by_index(&sub)?;
        match head {
            "Attribute" => {
                let mut m = Map::new();
                for p in indexed.values() {
                    if let (Some(n), Some(v)) = (field(p, "Name"), field(p, "Value")) {
                        m.insert(n.to_string(), Value::String(v.to_string()));
                    }
                }
                out.insert("Attributes".into(), Value::Object(m));
            }
            "MessageAttribute" | "MessageSystemAttribute" => {
                let mut m = Map::new();
                for p in indexed.values() {
                    let Some(n) = field(p, "Name") else { continue };
                    let mut v = Map::new();
                    for key in ["DataType", "StringValue", "BinaryValue"] {
                        if let Some(x) = field(p, &format!("Value.{key}")) {
                            v.insert(key.into(), Value::String(x.to_string()));
                        }
                    }
                    m.insert(n.to_string(), Value::Object(v));
                }
                out.insert(format!("{head}s"), Value::Object(m));
            }
            "AttributeName" | "MessageAttributeName" | "MessageSystemAttributeName" | "TagKey" | "AWSAccountId" => {
                let list =
                    indexed.values().filter_map(|p| field(p, "")).map(|s| Value::String(s.to_string())).collect();
                out.insert(format!("{head}s"), Value::Array(list));
            }
            "ActionName" => {
                let list =
                    indexed.values().filter_map(|p| field(p, "")).map(|s| Value::String(s.to_string())).collect();
                out.insert("Actions".into(), Value::Array(list));
            }
            "Tag" => {
                let mut m = Map::new();
                for p in indexed.values() {
                    if let Some(k) = field(p, "Key") {
                        m.insert(k.to_string(), Value::String(field(p, "Value").unwrap_or("").to_string()));
                    }
                }
                out.insert("Tags".into(), Value::Object(m));
            }
            h if h.ends_with("BatchRequestEntry") => {
                let entries = indexed.values().map(|p| build(p).map(Value::Object)).collect::<Result<Vec<_>, _>>()?;
                out.insert("Entries".into(), Value::Array(entries));
            }
            other => return Err(AwsError::InvalidParameterValue(format!("Unknown parameter {other}"))),
        }
    }
    Ok(out)
}

/// Escapes text for XML content.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => esc(s),
        other => other.to_string(),
    }
}

/// Writes the members of a JSON object as query-protocol XML elements.
fn write_members(action: &str, m: &Map<String, Value>, out: &mut String) {
    for (k, v) in m {
        match (k.as_str(), v) {
            ("QueueUrls" | "queueUrls", Value::Array(a)) => {
                a.iter().for_each(|u| out.push_str(&format!("<QueueUrl>{}</QueueUrl>", scalar(u))))
            }
            ("Messages", Value::Array(a)) => {
                for msg in a {
                    out.push_str("<Message>");
                    if let Value::Object(mm) = msg {
                        write_members(action, mm, out);
                    }
                    out.push_str("</Message>");
                }
            }
            ("Tags", Value::Object(tags)) => {
                for (n, val) in tags {
                    out.push_str(&format!("<Tag><Key>{}</Key><Value>{}</Value></Tag>", esc(n), scalar(val)));
                }
            }
            ("Results", Value::Array(a)) => {
                for e in a {
                    out.push_str("<ListMessageMoveTasksResultEntry>");
                    if let Value::Object(em) = e {
                        write_members(action, em, out);
                    }
                    out.push_str("</ListMessageMoveTasksResultEntry>");
                }
            }
            ("Attributes", Value::Object(attrs)) => {
                for (n, val) in attrs {
                    out.push_str(&format!(
                        "<Attribute><Name>{}</Name><Value>{}</Value></Attribute>",
                        esc(n),
                        scalar(val)
                    ));
                }
            }
            ("MessageAttributes", Value::Object(attrs)) => {
                for (n, val) in attrs {
                    out.push_str(&format!("<MessageAttribute><Name>{}</Name><Value>", esc(n)));
                    if let Value::Object(vm) = val {
                        write_members(action, vm, out);
                    }
                    out.push_str("</Value></MessageAttribute>");
                }
            }
            ("Successful", Value::Array(a)) | ("Failed", Value::Array(a)) => {
                let tag =
                    if k == "Failed" { "BatchResultErrorEntry".to_string() } else { format!("{action}ResultEntry") };
                for e in a {
                    out.push_str(&format!("<{tag}>"));
                    if let Value::Object(em) = e {
                        write_members(action, em, out);
                    }
                    out.push_str(&format!("</{tag}>"));
                }
            }
            (_, Value::Object(inner)) => {
                out.push_str(&format!("<{k}>"));
                write_members(action, inner, out);
                out.push_str(&format!("</{k}>"));
            }
            (_, Value::Array(a)) => a.iter().for_each(|x| out.push_str(&format!("<{k}>{}</{k}>", scalar(x)))),
            (_, v) => out.push_str(&format!("<{k}>{}</{k}>", scalar(v))),
        }
    }
}

/// The query-protocol XML for `action`'s JSON `output`.
pub fn to_xml(action: &str, output: &Value) -> String {
    let mut result = String::new();
    if let Value::Object(m) = output {
        write_members(action, m, &mut result);
    }
    let request_id = request_id();
    let result = if result.is_empty() { String::new() } else { format!("<{action}Result>{result}</{action}Result>") };
    format!(
        "<?xml version=\"1.0\"?><{action}Response xmlns=\"{XMLNS}\">{result}<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>"
    )
}

fn request_id() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// A successful query-protocol response.
pub fn xml_ok(action: &str, output: &Value) -> Response {
    let mut resp = (StatusCode::OK, to_xml(action, output)).into_response();
    resp.headers_mut().insert("content-type", HeaderValue::from_static("text/xml"));
    resp
}

/// A query-protocol error response (`<ErrorResponse>` with the legacy code).
pub fn xml_error(err: &AwsError) -> Response {
    let sh = shape(err);
    let body = format!(
        "<?xml version=\"1.0\"?><ErrorResponse xmlns=\"{XMLNS}\"><Error><Type>{}</Type><Code>{}</Code><Message>{}</Message><Detail/></Error><RequestId>{}</RequestId></ErrorResponse>",
        sh.fault,
        sh.query_code,
        esc(&err.to_string()),
        request_id()
    );
    let mut resp = (sh.status, body).into_response();
    resp.headers_mut().insert("content-type", HeaderValue::from_static("text/xml"));
    resp
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn flattened_form_becomes_the_json_shape() {
        let body = b"Action=SendMessageBatch&Version=2012-11-05&QueueUrl=http%3A%2F%2Fh%2F0%2Fq\
&SendMessageBatchRequestEntry.1.Id=a&SendMessageBatchRequestEntry.1.MessageBody=x\
&SendMessageBatchRequestEntry.1.DelaySeconds=3\
&SendMessageBatchRequestEntry.1.MessageAttribute.1.Name=k\
&SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.DataType=String\
&SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue=v\
&SendMessageBatchRequestEntry.2.Id=b&SendMessageBatchRequestEntry.2.MessageBody=y";
        let (action, input) = form_to_input(body, "/", "h").expect("parses");
        assert_eq!(action, "SendMessageBatch");
        assert_eq!(
            input,
            json!({
                "QueueUrl": "http://h/0/q",
                "Entries": [
                    {"Id": "a", "MessageBody": "x", "DelaySeconds": 3,
                     "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}}},
                    {"Id": "b", "MessageBody": "y"}
                ]
            })
        );
    }

    #[test]
    fn attributes_names_and_path_queue_url() {
        let body = b"Action=ReceiveMessage&AttributeName.1=All&MessageAttributeName.1=k&MaxNumberOfMessages=5";
        let (_, input) = form_to_input(body, "/000000000000/orders", "h:1").expect("parses");
        assert_eq!(
            input,
            json!({"QueueUrl": "http://h:1/000000000000/orders", "AttributeNames": ["All"],
                   "MessageAttributeNames": ["k"], "MaxNumberOfMessages": 5})
        );
        let (_, input) = form_to_input(
            b"Action=CreateQueue&QueueName=q&Attribute.1.Name=DelaySeconds&Attribute.1.Value=5",
            "/",
            "h",
        )
        .expect("parses");
        assert_eq!(input, json!({"QueueName": "q", "Attributes": {"DelaySeconds": "5"}}));
    }

    #[test]
    fn output_is_written_as_query_xml() {
        let out = json!({"Messages": [{"MessageId": "m", "Body": "a<b", "Attributes": {"SentTimestamp": "1"},
            "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}}}]});
        let xml = to_xml("ReceiveMessage", &out);
        assert!(xml.contains("<ReceiveMessageResult><Message>"), "{xml}");
        assert!(xml.contains("<Body>a&lt;b</Body>"), "{xml}");
        assert!(xml.contains("<Attribute><Name>SentTimestamp</Name><Value>1</Value></Attribute>"), "{xml}");
        assert!(xml.contains("<MessageAttribute><Name>k</Name><Value><DataType>String</DataType><StringValue>v</StringValue></Value></MessageAttribute>"), "{xml}");
        let batch = to_xml("DeleteMessageBatch", &json!({"Successful": [{"Id": "a"}], "Failed": []}));
        assert!(batch.contains("<DeleteMessageBatchResultEntry><Id>a</Id></DeleteMessageBatchResultEntry>"), "{batch}");
        assert!(!to_xml("DeleteMessage", &json!({})).contains("DeleteMessageResult"));
    }
}
