//! The AWS JSON 1.0 wire shapes of the hot SQS actions (`SendMessage`, `SendMessageBatch`,
//! `ReceiveMessage`, `DeleteMessage`, `DeleteMessageBatch`), typed.
//!
//! Requests are parsed into borrowed structs (a body without escapes is not copied) instead of
//! a `serde_json::Value` tree. The handlers read their input through [`Input`], implemented by
//! both the typed structs and `Value` (the query protocol and every other action), so the
//! validation code and the order of its checks exist once. A typed parse that fails for any
//! reason (a field of the wrong type, a duplicate key, `null` where the old reading refused
//! it, ...) is not an error: the caller falls back to the `Value` reading, which gives the
//! same AWS error as before. Valid inputs give the same result either way (property-tested).
//!
//! Answers are written by hand ([`JsonOut`]); strings are copied as they are unless they
//! hold one of the few bytes JSON must escape, which a word-at-a-time scan finds.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};

use crate::error::AwsError;

type Res<T> = Result<T, AwsError>;

/// A string field, borrowed from the request body when it holds no escapes.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct Str<'a>(#[serde(borrow)] pub Cow<'a, str>);

/// Reads a field that is present, whatever its value (`null` included), so a present `null`
/// stays distinguishable from an absent field, as the `Value` reading sees it.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Reads a list of objects that is present; `null`, or an entry that is not an object, is
/// a type error (the `Value` reading refuses the first and finds no fields in the second).
fn present_list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Vec<T>>, D::Error> {
    Vec::<MapOnly<T>>::deserialize(d).map(|v| Some(v.into_iter().map(|m| m.0).collect()))
}

/// A struct read from a JSON object only (derived structs also accept an array).
struct MapOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOnly<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Objects<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Objects<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Objects(std::marker::PhantomData)).map(MapOnly)
    }
}

/// Read access to a request's fields, by their JSON member names.
///
/// A typed request implements only the kinds of fields it has; the defaults answer "absent"
/// (and assert in debug builds, since a handler asking a typed request for a field it does not
/// map is a bug).
pub trait Input {
    /// A string field; a present value of another type is a `SerializationException`.
    fn opt_str(&self, key: &str) -> Res<Option<&str>>;
    /// An integer field; a present value of another type is a `SerializationException`.
    fn opt_int(&self, key: &str) -> Res<Option<i64>> {
        unmapped(key);
        Ok(None)
    }
    /// A list of strings.
    fn opt_str_list(&self, key: &str) -> Res<Option<Vec<String>>> {
        unmapped(key);
        Ok(None)
    }
    /// A field as JSON, if present (maps such as `MessageAttributes`).
    fn value(&self, key: &str) -> Option<&Value> {
        unmapped(key);
        None
    }
}

/// A batch request: its entries.
pub trait BatchInput: Input {
    /// One entry.
    type Entry: Input;
    /// The `Entries` list.
    fn entries(&self) -> Res<&[Self::Entry]>;
}

impl Input for Value {
    fn opt_str(&self, key: &str) -> Res<Option<&str>> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(AwsError::SerializationException(format!("{key} must be a string"))),
        }
    }

    fn opt_int(&self, key: &str) -> Res<Option<i64>> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| AwsError::SerializationException(format!("{key} must be an integer"))),
            Some(_) => Err(AwsError::SerializationException(format!("{key} must be an integer"))),
        }
    }

    fn opt_str_list(&self, key: &str) -> Res<Option<Vec<String>>> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| AwsError::SerializationException(format!("{key} must be a list of strings")))
                })
                .collect::<Res<Vec<_>>>()
                .map(Some),
            Some(_) => Err(AwsError::SerializationException(format!("{key} must be a list"))),
        }
    }

    fn value(&self, key: &str) -> Option<&Value> {
        self.get(key)
    }
}

impl BatchInput for Value {
    type Entry = Value;

    fn entries(&self) -> Res<&[Value]> {
        self.get("Entries")
            .ok_or_else(|| AwsError::MissingParameter("Entries".into()))?
            .as_array()
            .map(Vec::as_slice)
            .ok_or_else(|| AwsError::SerializationException("Entries must be a list".into()))
    }
}

/// Panics in debug builds when a handler asks a typed input for a field it does not map
/// (it would silently read as absent); release builds read it as absent.
fn unmapped(key: &str) {
    debug_assert!(false, "typed SQS input has no field {key}");
}

fn s<'b>(v: &'b Option<Str<'_>>) -> Option<&'b str> {
    v.as_ref().map(|s| s.0.as_ref())
}

/// One `SendMessageBatch` entry, or a whole `SendMessage` request: the same fields, except that
/// an entry has an `Id` and `SendMessage` a `QueueUrl` (each reading asks only for its own; a
/// member of the other kind is ignored, as the `Value` reading ignores unknown members).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SendEntryIn<'a> {
    /// `QueueUrl` (`SendMessage`).
    #[serde(borrow, default)]
    pub queue_url: Option<Str<'a>>,
    /// `Id` (batch entries).
    #[serde(borrow, default)]
    pub id: Option<Str<'a>>,
    /// `MessageBody`.
    #[serde(borrow, default)]
    pub message_body: Option<Str<'a>>,
    /// `DelaySeconds`.
    #[serde(default)]
    pub delay_seconds: Option<i64>,
    /// `MessageGroupId`.
    #[serde(borrow, default)]
    pub message_group_id: Option<Str<'a>>,
    /// `MessageDeduplicationId`.
    #[serde(borrow, default)]
    pub message_deduplication_id: Option<Str<'a>>,
    /// `MessageAttributes`, checked by the shared attribute parser.
    #[serde(default, deserialize_with = "present")]
    pub message_attributes: Option<Value>,
    /// `MessageSystemAttributes`.
    #[serde(default, deserialize_with = "present")]
    pub message_system_attributes: Option<Value>,
}

/// `SendMessage`: see [`SendEntryIn`].
pub type SendMessageIn<'a> = SendEntryIn<'a>;

impl Input for SendEntryIn<'_> {
    fn opt_str(&self, key: &str) -> Res<Option<&str>> {
        Ok(match key {
            "QueueUrl" => s(&self.queue_url),
            "Id" => s(&self.id),
            "MessageBody" => s(&self.message_body),
            "MessageGroupId" => s(&self.message_group_id),
            "MessageDeduplicationId" => s(&self.message_deduplication_id),
            _ => {
                unmapped(key);
                None
            }
        })
    }

    fn opt_int(&self, key: &str) -> Res<Option<i64>> {
        match key {
            "DelaySeconds" => Ok(self.delay_seconds),
            _ => {
                unmapped(key);
                Ok(None)
            }
        }
    }

    fn value(&self, key: &str) -> Option<&Value> {
        match key {
            "MessageAttributes" => self.message_attributes.as_ref(),
            "MessageSystemAttributes" => self.message_system_attributes.as_ref(),
            _ => {
                unmapped(key);
                None
            }
        }
    }
}

/// `SendMessageBatch`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SendBatchIn<'a> {
    /// `QueueUrl`.
    #[serde(borrow, default)]
    pub queue_url: Option<Str<'a>>,
    /// `Entries`.
    #[serde(borrow, default, deserialize_with = "present_list")]
    pub entries: Option<Vec<SendEntryIn<'a>>>,
}

/// `DeleteMessage`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteIn<'a> {
    /// `QueueUrl`.
    #[serde(borrow, default)]
    pub queue_url: Option<Str<'a>>,
    /// `ReceiptHandle`.
    #[serde(borrow, default)]
    pub receipt_handle: Option<Str<'a>>,
}

impl Input for DeleteIn<'_> {
    fn opt_str(&self, key: &str) -> Res<Option<&str>> {
        Ok(match key {
            "QueueUrl" => s(&self.queue_url),
            "ReceiptHandle" => s(&self.receipt_handle),
            _ => {
                unmapped(key);
                None
            }
        })
    }
}

/// One `DeleteMessageBatch` entry.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteEntryIn<'a> {
    /// `Id`.
    #[serde(borrow, default)]
    pub id: Option<Str<'a>>,
    /// `ReceiptHandle`.
    #[serde(borrow, default)]
    pub receipt_handle: Option<Str<'a>>,
}

impl Input for DeleteEntryIn<'_> {
    fn opt_str(&self, key: &str) -> Res<Option<&str>> {
        Ok(match key {
            "Id" => s(&self.id),
            "ReceiptHandle" => s(&self.receipt_handle),
            _ => {
                unmapped(key);
                None
            }
        })
    }
}

/// `DeleteMessageBatch`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteBatchIn<'a> {
    /// `QueueUrl`.
    #[serde(borrow, default)]
    pub queue_url: Option<Str<'a>>,
    /// `Entries`.
    #[serde(borrow, default, deserialize_with = "present_list")]
    pub entries: Option<Vec<DeleteEntryIn<'a>>>,
}

/// Implements [`Input`] and [`BatchInput`] for a batch request with a `QueueUrl`.
macro_rules! batch_input {
    ($t:ident, $entry:ident) => {
        impl Input for $t<'_> {
            fn opt_str(&self, key: &str) -> Res<Option<&str>> {
                Ok(match key {
                    "QueueUrl" => s(&self.queue_url),
                    _ => {
                        unmapped(key);
                        None
                    }
                })
            }
        }

        impl<'a> BatchInput for $t<'a> {
            type Entry = $entry<'a>;

            fn entries(&self) -> Res<&[$entry<'a>]> {
                self.entries.as_deref().ok_or_else(|| AwsError::MissingParameter("Entries".into()))
            }
        }
    };
}

batch_input!(SendBatchIn, SendEntryIn);
batch_input!(DeleteBatchIn, DeleteEntryIn);

/// `ReceiveMessage`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReceiveIn<'a> {
    /// `QueueUrl`.
    #[serde(borrow, default)]
    pub queue_url: Option<Str<'a>>,
    /// `MaxNumberOfMessages`.
    #[serde(default)]
    pub max_number_of_messages: Option<i64>,
    /// `VisibilityTimeout`.
    #[serde(default)]
    pub visibility_timeout: Option<i64>,
    /// `WaitTimeSeconds`.
    #[serde(default)]
    pub wait_time_seconds: Option<i64>,
    /// `AttributeNames` (the legacy list).
    #[serde(default)]
    pub attribute_names: Option<Vec<String>>,
    /// `MessageSystemAttributeNames`.
    #[serde(default)]
    pub message_system_attribute_names: Option<Vec<String>>,
    /// `MessageAttributeNames`.
    #[serde(default)]
    pub message_attribute_names: Option<Vec<String>>,
    /// `ReceiveRequestAttemptId`.
    #[serde(borrow, default)]
    pub receive_request_attempt_id: Option<Str<'a>>,
}

impl Input for ReceiveIn<'_> {
    fn opt_str(&self, key: &str) -> Res<Option<&str>> {
        Ok(match key {
            "QueueUrl" => s(&self.queue_url),
            "ReceiveRequestAttemptId" => s(&self.receive_request_attempt_id),
            _ => {
                unmapped(key);
                None
            }
        })
    }

    fn opt_int(&self, key: &str) -> Res<Option<i64>> {
        Ok(match key {
            "MaxNumberOfMessages" => self.max_number_of_messages,
            "VisibilityTimeout" => self.visibility_timeout,
            "WaitTimeSeconds" => self.wait_time_seconds,
            _ => {
                unmapped(key);
                None
            }
        })
    }

    fn opt_str_list(&self, key: &str) -> Res<Option<Vec<String>>> {
        Ok(match key {
            "AttributeNames" => self.attribute_names.clone(),
            "MessageSystemAttributeNames" => self.message_system_attribute_names.clone(),
            "MessageAttributeNames" => self.message_attribute_names.clone(),
            _ => {
                unmapped(key);
                None
            }
        })
    }
}

/// Parses `body` as `T` if it is a JSON object of the expected field types; `None` sends
/// the caller to the `Value` reading (which reports what is wrong, as before).
pub fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Option<T> {
    // serde's derived structs also accept a JSON array; the protocol wants an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    serde_json::from_slice(body).ok()
}

/// True if JSON must escape a byte of `b` (control characters, `"` and `\`; serde_json
/// escapes nothing else).
pub fn needs_escape(b: &[u8]) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // Bit 7 of a byte of the result is set for a byte below 0x20, '"' or '\' (and possibly
    // for the byte after one: only "is there any" is exact, which is all that is asked).
    let flags = |c: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let w = u64::from_le_bytes(w);
        let q = w ^ (b'"' as u64 * LO);
        let s = w ^ (b'\\' as u64 * LO);
        (w.wrapping_sub(0x20 * LO) & !w | q.wrapping_sub(LO) & !q | s.wrapping_sub(LO) & !s) & HI
    };
    let mut blocks = b.chunks_exact(32);
    for c in &mut blocks {
        if flags(&c[..8]) | flags(&c[8..16]) | flags(&c[16..24]) | flags(&c[24..]) != 0 {
            return true;
        }
    }
    let mut words = blocks.remainder().chunks_exact(8);
    for c in &mut words {
        if flags(c) != 0 {
            return true;
        }
    }
    words.remainder().iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\')
}

/// True if every byte of `b` is ASCII from space (0x20) up: text SQS accepts as a body
/// without a closer look.
pub fn is_plain_ascii(b: &[u8]) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let w = u64::from_le_bytes(w);
        if w & HI != 0 || w.wrapping_sub(0x20 * LO) & !w & HI != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&c| (0x20..0x80).contains(&c))
}

/// A JSON answer being written.
#[derive(Debug, Default)]
pub struct JsonOut {
    /// The bytes so far.
    pub buf: Vec<u8>,
}

impl JsonOut {
    /// An empty answer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> JsonOut {
        JsonOut { buf: Vec::with_capacity(capacity) }
    }

    /// Appends raw JSON text.
    pub fn raw(&mut self, s: &str) {
        self.buf.extend_from_slice(s.as_bytes());
    }

    /// Appends a JSON string.
    pub fn str(&mut self, s: &str) {
        if needs_escape(s.as_bytes()) {
            // serde_json cannot fail writing a str into a Vec.
            let _ = serde_json::to_writer(&mut self.buf, s);
        } else {
            self.buf.push(b'"');
            self.buf.extend_from_slice(s.as_bytes());
            self.buf.push(b'"');
        }
    }

    /// Appends `"key":` (the key needs no escaping), after a comma unless `first`.
    pub fn key(&mut self, first: bool, key: &str) {
        if !first {
            self.buf.push(b',');
        }
        self.buf.push(b'"');
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    /// Appends `"key":"value"`.
    pub fn field(&mut self, first: bool, key: &str, value: &str) {
        self.key(first, key);
        self.str(value);
    }

    /// Appends any JSON value.
    pub fn value(&mut self, v: &Value) {
        // serde_json cannot fail writing a Value into a Vec.
        let _ = serde_json::to_writer(&mut self.buf, v);
    }
}

/// What a successful send answers (`SendMessage`, one `SendMessageBatch` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// `MessageId`.
    pub message_id: String,
    /// `MD5OfMessageBody`.
    pub md5_body: String,
    /// `MD5OfMessageAttributes`.
    pub md5_attributes: Option<String>,
    /// `SequenceNumber` (FIFO).
    pub sequence: Option<String>,
    /// `MD5OfMessageSystemAttributes`.
    pub md5_system: Option<String>,
}

impl Sent {
    /// As JSON, with `Id` when it answers a batch entry.
    pub fn to_value(&self, id: Option<&str>) -> Value {
        let mut v = json!({ "MessageId": self.message_id, "MD5OfMessageBody": self.md5_body });
        if let Some(m) = &self.md5_attributes {
            v["MD5OfMessageAttributes"] = json!(m);
        }
        if let Some(s) = &self.sequence {
            v["SequenceNumber"] = json!(s);
        }
        if let Some(m) = &self.md5_system {
            v["MD5OfMessageSystemAttributes"] = json!(m);
        }
        if let Some(id) = id {
            v["Id"] = json!(id);
        }
        v
    }

    /// Writes the object [`Sent::to_value`] makes.
    pub fn write(&self, out: &mut JsonOut, id: Option<&str>) {
        out.raw("{");
        let mut first = true;
        if let Some(id) = id {
            out.field(true, "Id", id);
            first = false;
        }
        out.field(first, "MessageId", &self.message_id);
        out.field(false, "MD5OfMessageBody", &self.md5_body);
        if let Some(m) = &self.md5_attributes {
            out.field(false, "MD5OfMessageAttributes", m);
        }
        if let Some(s) = &self.sequence {
            out.field(false, "SequenceNumber", s);
        }
        if let Some(m) = &self.md5_system {
            out.field(false, "MD5OfMessageSystemAttributes", m);
        }
        out.raw("}");
    }
}

/// The answer to a batch action: the successful entries (id and result) and the failed ones.
#[derive(Debug, Default)]
pub struct BatchOut<T> {
    /// `Successful`: entry id and what it answers.
    pub ok: Vec<(String, T)>,
    /// `Failed`, as JSON objects.
    pub failed: Vec<Value>,
}

/// What one successful batch entry answers besides its `Id`.
pub trait EntryResult {
    /// As JSON, `Id` included.
    fn to_value(&self, id: &str) -> Value;
    /// Writes what [`EntryResult::to_value`] makes.
    fn write(&self, out: &mut JsonOut, id: &str);
}

impl EntryResult for Sent {
    fn to_value(&self, id: &str) -> Value {
        Sent::to_value(self, Some(id))
    }

    fn write(&self, out: &mut JsonOut, id: &str) {
        Sent::write(self, out, Some(id));
    }
}

impl EntryResult for () {
    fn to_value(&self, id: &str) -> Value {
        json!({ "Id": id })
    }

    fn write(&self, out: &mut JsonOut, id: &str) {
        out.raw("{");
        out.field(true, "Id", id);
        out.raw("}");
    }
}

impl<T: EntryResult> BatchOut<T> {
    /// As JSON (`{"Successful": [...], "Failed": [...]}`).
    pub fn to_value(&self) -> Value {
        let ok: Vec<Value> = self.ok.iter().map(|(id, r)| r.to_value(id)).collect();
        json!({ "Successful": ok, "Failed": self.failed })
    }

    /// Writes what [`BatchOut::to_value`] makes.
    pub fn write(&self, out: &mut JsonOut) {
        out.raw("{\"Successful\":[");
        for (i, (id, r)) in self.ok.iter().enumerate() {
            if i > 0 {
                out.raw(",");
            }
            r.write(out, id);
        }
        out.raw("],\"Failed\":[");
        for (i, f) in self.failed.iter().enumerate() {
            if i > 0 {
                out.raw(",");
            }
            out.value(f);
        }
        out.raw("]}");
    }
}

/// A received body: the message's bytes when they are UTF-8 (no copy), else their lossy text.
#[derive(Debug, Clone)]
pub enum BodyText {
    /// Valid UTF-8.
    Utf8(bytes::Bytes),
    /// Converted with replacement characters.
    Lossy(String),
}

impl BodyText {
    /// The text.
    pub fn as_str(&self) -> Cow<'_, str> {
        match self {
            BodyText::Utf8(b) => String::from_utf8_lossy(b),
            BodyText::Lossy(s) => Cow::Borrowed(s),
        }
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        match self {
            BodyText::Utf8(b) => b.len(),
            BodyText::Lossy(s) => s.len(),
        }
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn write(&self, out: &mut JsonOut) {
        match self {
            BodyText::Utf8(b) if !needs_escape(b) => {
                out.buf.push(b'"');
                out.buf.extend_from_slice(b);
                out.buf.push(b'"');
            }
            _ => out.str(&self.as_str()),
        }
    }
}

/// One received message in SQS's shape.
#[derive(Debug, Clone)]
pub struct ReceivedMsg {
    /// `MessageId`.
    pub message_id: String,
    /// `ReceiptHandle`.
    pub receipt_handle: String,
    /// `MD5OfBody`.
    pub md5_body: String,
    /// `Body`.
    pub body: BodyText,
    /// `Attributes` (system attributes), when any was asked for and present.
    pub attributes: Option<Map<String, Value>>,
    /// `MessageAttributes`, when any was selected.
    pub message_attributes: Option<Map<String, Value>>,
    /// `MD5OfMessageAttributes` of the selected attributes.
    pub md5_attributes: Option<String>,
}

impl ReceivedMsg {
    /// As JSON.
    pub fn to_value(&self) -> Value {
        let mut v = json!({
            "MessageId": self.message_id,
            "ReceiptHandle": self.receipt_handle,
            "MD5OfBody": self.md5_body,
            "Body": self.body.as_str(),
        });
        if let Some(a) = &self.attributes {
            v["Attributes"] = Value::Object(a.clone());
        }
        if let Some(a) = &self.message_attributes {
            v["MessageAttributes"] = Value::Object(a.clone());
        }
        if let Some(m) = &self.md5_attributes {
            v["MD5OfMessageAttributes"] = json!(m);
        }
        v
    }

    /// Writes what [`ReceivedMsg::to_value`] makes.
    pub fn write(&self, out: &mut JsonOut) {
        out.raw("{");
        out.field(true, "MessageId", &self.message_id);
        out.field(false, "ReceiptHandle", &self.receipt_handle);
        out.field(false, "MD5OfBody", &self.md5_body);
        out.key(false, "Body");
        self.body.write(out);
        if let Some(a) = &self.attributes {
            out.key(false, "Attributes");
            let _ = serde_json::to_writer(&mut out.buf, a);
        }
        if let Some(a) = &self.message_attributes {
            out.key(false, "MessageAttributes");
            let _ = serde_json::to_writer(&mut out.buf, a);
        }
        if let Some(m) = &self.md5_attributes {
            out.field(false, "MD5OfMessageAttributes", m);
        }
        out.raw("}");
    }
}

/// The answer to `ReceiveMessage`.
#[derive(Debug)]
pub enum ReceiveOut {
    /// Freshly received messages (possibly none).
    Messages(Vec<ReceivedMsg>),
    /// The recorded answer of an earlier receive with the same attempt id.
    Replayed(Value),
}

impl ReceiveOut {
    /// The answer for a list of messages (`{}` when empty).
    pub fn messages_value(messages: &[ReceivedMsg]) -> Value {
        if messages.is_empty() {
            return json!({});
        }
        json!({ "Messages": messages.iter().map(ReceivedMsg::to_value).collect::<Vec<_>>() })
    }

    /// As JSON.
    pub fn to_value(&self) -> Value {
        match self {
            ReceiveOut::Messages(m) => Self::messages_value(m),
            ReceiveOut::Replayed(v) => v.clone(),
        }
    }

    /// Writes what [`ReceiveOut::to_value`] makes.
    pub fn write(&self, out: &mut JsonOut) {
        match self {
            ReceiveOut::Messages(m) if m.is_empty() => out.raw("{}"),
            ReceiveOut::Messages(m) => {
                out.raw("{\"Messages\":[");
                for (i, msg) in m.iter().enumerate() {
                    if i > 0 {
                        out.raw(",");
                    }
                    msg.write(out);
                }
                out.raw("]}");
            }
            ReceiveOut::Replayed(v) => out.value(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_scan_finds_exactly_what_json_escapes() {
        for b in 0u8..=255 {
            for pos in 0..70 {
                let mut v = vec![b'a'; 70];
                v[pos] = b;
                let expected = b < 0x20 || b == b'"' || b == b'\\';
                assert_eq!(needs_escape(&v), expected, "byte {b:#x} at {pos}");
            }
        }
        assert!(!needs_escape(b""));
        assert!(!needs_escape("héllo wörld / ~ \u{7f} 😀".as_bytes()));
    }

    #[test]
    fn plain_ascii_scan_is_exact() {
        for b in 0u8..=255 {
            for pos in 0..20 {
                let mut v = vec![b'a'; 20];
                v[pos] = b;
                assert_eq!(is_plain_ascii(&v), (0x20..0x80).contains(&b), "byte {b:#x} at {pos}");
            }
        }
        assert!(is_plain_ascii(b""));
    }

    #[test]
    fn written_strings_equal_serde_json() {
        let mut out = JsonOut::default();
        for s in ["", "plain", "quote\"", "back\\slash", "nl\n", "\u{1}", "ünïcode 😀", "\u{7f}"] {
            out.buf.clear();
            out.str(s);
            assert_eq!(out.buf, serde_json::to_vec(s).expect("ser"), "{s:?}");
        }
    }

    #[test]
    fn bodies_borrow_when_unescaped() {
        let raw = br#"{"QueueUrl":"http://h/1/q","Entries":[{"Id":"a","MessageBody":"xyz"},{"Id":"b","MessageBody":"x\"y"}]}"#;
        let b: SendBatchIn = parse(raw).expect("typed");
        let e = b.entries().expect("entries");
        assert!(matches!(e[0].message_body.as_ref().map(|s| &s.0), Some(Cow::Borrowed("xyz"))));
        assert_eq!(e[1].opt_str("MessageBody").expect("str"), Some("x\"y"));
    }

    #[test]
    fn arrays_and_wrong_types_fall_back() {
        assert!(parse::<ReceiveIn>(br#"["http://h/1/q", 1]"#).is_none());
        assert!(parse::<ReceiveIn>(br#"{"QueueUrl":1}"#).is_none());
        assert!(parse::<ReceiveIn>(br#"{"MaxNumberOfMessages":1.5}"#).is_none());
        assert!(parse::<SendBatchIn>(br#"{"Entries":null}"#).is_none());
        assert!(parse::<DeleteIn>(br#"{"ReceiptHandle":"a","ReceiptHandle":"b"}"#).is_none());
        assert!(parse::<ReceiveIn>(br#"{"QueueUrl":"u"} x"#).is_none());
        assert!(parse::<DeleteBatchIn>(br#"{"Entries":[["a","h"]]}"#).is_none());
        assert!(parse::<DeleteBatchIn>(br#"{"Entries":[{"Id":"a","ReceiptHandle":"h"}]}"#).is_some());
        let v: SendMessageIn = parse(br#"{"MessageAttributes":null}"#).expect("typed");
        assert_eq!(v.value("MessageAttributes"), Some(&Value::Null));
    }

    mod typed_vs_value {
        use super::*;
        use proptest::prelude::*;

        /// A JSON value of any of the types a client might put in a field.
        fn field_value() -> impl Strategy<Value = Value> {
            prop_oneof![
                "[a-zA-Z0-9_-]{0,12}".prop_map(Value::from),
                // Strings needing escapes (quotes, backslashes, control and non-ASCII characters).
                "[a\"\\\\\n\t\u{1}é😀]{0,6}".prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                (0u32..100).prop_map(|n| json!(n as f64 + 0.5)),
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                prop::collection::vec("[A-Za-z.*]{0,8}".prop_map(Value::from), 0..3).prop_map(Value::from),
                prop::collection::vec(prop_oneof![Just(Value::Null), any::<i32>().prop_map(Value::from)], 1..3)
                    .prop_map(Value::from),
                Just(json!({"a": {"DataType": "String", "StringValue": "v"}})),
            ]
        }

        /// An object with some of `keys` (and an unknown member) set to arbitrary values.
        fn object(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
            prop::collection::vec((prop::sample::select(keys), field_value()), 0..keys.len() + 2).prop_map(|kv| {
                let mut m = Map::new();
                for (k, v) in kv {
                    m.insert(k.to_string(), v);
                }
                Value::Object(m)
            })
        }

        const ENTRY_KEYS: &[&str] = &[
            "Id",
            "MessageBody",
            "DelaySeconds",
            "MessageGroupId",
            "MessageDeduplicationId",
            "MessageAttributes",
            "MessageSystemAttributes",
            "Unknown",
        ];
        const RECEIVE_KEYS: &[&str] = &[
            "QueueUrl",
            "MaxNumberOfMessages",
            "VisibilityTimeout",
            "WaitTimeSeconds",
            "AttributeNames",
            "MessageSystemAttributeNames",
            "MessageAttributeNames",
            "ReceiveRequestAttemptId",
            "Unknown",
        ];
        const DELETE_KEYS: &[&str] = &["QueueUrl", "ReceiptHandle", "Unknown"];
        const DELETE_ENTRY_KEYS: &[&str] = &["Id", "ReceiptHandle", "Unknown"];

        /// A batch request: `QueueUrl` and `Entries` that may be a list of entries or anything.
        fn batch(entry_keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
            let entries = prop_oneof![
                3 => prop::collection::vec(
                    prop_oneof![4 => object(entry_keys), 1 => field_value()], 0..4
                ).prop_map(Value::from),
                1 => field_value(),
            ];
            (prop::option::of(field_value()), prop::option::of(entries)).prop_map(|(url, entries)| {
                let mut m = Map::new();
                if let Some(u) = url {
                    m.insert("QueueUrl".into(), u);
                }
                if let Some(e) = entries {
                    m.insert("Entries".into(), e);
                }
                Value::Object(m)
            })
        }

        /// Every accessor the handlers use gives the same answer on both readings.
        fn same_fields(typed: &impl Input, value: &Value, keys: &[&str]) -> Result<(), TestCaseError> {
            for &k in keys.iter().filter(|k| **k != "Unknown") {
                match k {
                    "DelaySeconds" | "MaxNumberOfMessages" | "VisibilityTimeout" | "WaitTimeSeconds" => {
                        let v = value.opt_int(k);
                        prop_assert!(v.is_ok(), "typed parse accepted a bad {}", k);
                        prop_assert_eq!(typed.opt_int(k).ok(), v.ok());
                    }
                    "AttributeNames" | "MessageSystemAttributeNames" | "MessageAttributeNames" => {
                        let v = value.opt_str_list(k);
                        prop_assert!(v.is_ok(), "typed parse accepted a bad {}", k);
                        prop_assert_eq!(typed.opt_str_list(k).ok(), v.ok());
                    }
                    "MessageAttributes" | "MessageSystemAttributes" => {
                        prop_assert_eq!(typed.value(k), value.value(k));
                    }
                    _ => {
                        let v = value.opt_str(k);
                        prop_assert!(v.is_ok(), "typed parse accepted a bad {}", k);
                        prop_assert_eq!(typed.opt_str(k).ok(), v.ok());
                    }
                }
            }
            Ok(())
        }

        /// Where the typed reading applies, it equals the `Value` reading; where it does not,
        /// the `Value` reading (the fallback) finds something wrong, so nothing valid is lost
        /// to the slow path and every invalid request still gets the old AWS error.
        fn check_batch<'a, B>(value: &Value, raw: &'a [u8], entry_keys: &[&str]) -> Result<(), TestCaseError>
        where
            B: BatchInput + Deserialize<'a>,
        {
            match parse::<B>(raw) {
                Some(typed) => {
                    prop_assert_eq!(typed.opt_str("QueueUrl").ok(), value.opt_str("QueueUrl").ok());
                    let ve = value.entries();
                    match typed.entries() {
                        Ok(te) => {
                            let ve = ve.map_err(|e| TestCaseError::fail(format!("value refused entries: {e}")))?;
                            prop_assert_eq!(te.len(), ve.len());
                            for (t, v) in te.iter().zip(ve) {
                                same_fields(t, v, entry_keys)?;
                            }
                        }
                        Err(e) => prop_assert_eq!(Some(e.to_string()), ve.err().map(|e| e.to_string())),
                    }
                }
                None => {
                    let bad_url = value.opt_str("QueueUrl").is_err();
                    let bad_entries = match value.entries() {
                        Err(AwsError::SerializationException(_)) => true,
                        Err(_) => false,
                        Ok(es) => es.iter().any(|e| {
                            !e.is_object()
                                || entry_keys.iter().any(|k| match *k {
                                    "DelaySeconds" => e.opt_int(k).is_err(),
                                    "MessageAttributes" | "MessageSystemAttributes" | "Unknown" => false,
                                    k => e.opt_str(k).is_err(),
                                })
                        }),
                    };
                    prop_assert!(bad_url || bad_entries, "valid request not parsed typed: {}", value);
                }
            }
            Ok(())
        }

        proptest! {
            #[test]
            fn send_batch_typed_equals_value(v in batch(ENTRY_KEYS)) {
                let raw = serde_json::to_vec(&v).expect("ser");
                check_batch::<SendBatchIn>(&v, &raw, ENTRY_KEYS)?;
            }

            #[test]
            fn delete_batch_typed_equals_value(v in batch(DELETE_ENTRY_KEYS)) {
                let raw = serde_json::to_vec(&v).expect("ser");
                check_batch::<DeleteBatchIn>(&v, &raw, DELETE_ENTRY_KEYS)?;
            }

            #[test]
            fn receive_typed_equals_value(v in object(RECEIVE_KEYS)) {
                let raw = serde_json::to_vec(&v).expect("ser");
                match parse::<ReceiveIn>(&raw) {
                    Some(t) => same_fields(&t, &v, RECEIVE_KEYS)?,
                    None => {
                        let bad = RECEIVE_KEYS.iter().any(|k| match *k {
                            "QueueUrl" | "ReceiveRequestAttemptId" => v.opt_str(k).is_err(),
                            "Unknown" => false,
                            k if k.ends_with("Names") => v.opt_str_list(k).is_err(),
                            k => v.opt_int(k).is_err(),
                        });
                        prop_assert!(bad, "valid request not parsed typed: {}", v);
                    }
                }
            }

            #[test]
            fn send_message_and_delete_typed_equal_value(v in object(ENTRY_KEYS), d in object(DELETE_KEYS)) {
                let raw = serde_json::to_vec(&v).expect("ser");
                if let Some(t) = parse::<SendMessageIn>(&raw) {
                    same_fields(&t, &v, &ENTRY_KEYS[1..])?;
                }
                let raw = serde_json::to_vec(&d).expect("ser");
                if let Some(t) = parse::<DeleteIn>(&raw) {
                    same_fields(&t, &d, DELETE_KEYS)?;
                }
            }

            #[test]
            fn answers_written_by_hand_equal_serde_json(
                body in "[a\"\\\\\n\u{1}é😀x]{0,40}",
                id in "[a-zA-Z0-9_-]{1,10}",
                attrs in any::<bool>(),
            ) {
                let sent = Sent {
                    message_id: "m".into(),
                    md5_body: "0123".into(),
                    md5_attributes: attrs.then(|| "ab".into()),
                    sequence: attrs.then(|| "0001".into()),
                    md5_system: None,
                };
                let batch = BatchOut { ok: vec![(id.clone(), sent.clone())], failed: vec![json!({"Id": "x", "Code": "c"})] };
                let mut out = JsonOut::default();
                batch.write(&mut out);
                prop_assert_eq!(serde_json::from_slice::<Value>(&out.buf).expect("json"), batch.to_value());
                let msg = ReceivedMsg {
                    message_id: id.clone(),
                    receipt_handle: "h".into(),
                    md5_body: "d".into(),
                    body: BodyText::Utf8(bytes::Bytes::from(body.clone())),
                    attributes: attrs.then(|| Map::from_iter([("SenderId".to_string(), json!("1"))])),
                    message_attributes: None,
                    md5_attributes: None,
                };
                let r = ReceiveOut::Messages(vec![msg.clone(), msg]);
                let mut out = JsonOut::default();
                r.write(&mut out);
                prop_assert_eq!(serde_json::from_slice::<Value>(&out.buf).expect("json"), r.to_value());
            }
        }
    }

    /// The typed path against the `Value` path on a live queue, through the JSON handler.
    mod through_the_handler {
        use switchyard::{Broker, CoreConfig};

        use super::*;
        use crate::config::AwsConfig;
        use crate::sqs::Sqs;

        /// Status and JSON body of an answer.
        async fn answer(resp: axum::response::Response) -> (u16, Value) {
            let status = resp.status().as_u16();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
            (status, serde_json::from_slice(&bytes).expect("a JSON answer"))
        }

        /// What the handler answered before the typed path existed: the `Value` reading.
        async fn old_path(sqs: &Sqs, action: &str, body: &str) -> (u16, Value) {
            let resp = match serde_json::from_str::<Value>(body) {
                Ok(v @ Value::Object(_)) => match sqs.call(action, &v, "h").await {
                    Ok(v) => crate::sqs::ok(v),
                    Err(e) => crate::error::json_error(crate::sqs::NAMESPACE, &e),
                },
                Ok(_) => crate::error::json_error(
                    crate::sqs::NAMESPACE,
                    &AwsError::SerializationException("Expected a JSON object".into()),
                ),
                Err(e) => {
                    crate::error::json_error(crate::sqs::NAMESPACE, &AwsError::SerializationException(e.to_string()))
                }
            };
            answer(resp).await
        }

        /// The parts of an answer that do not change from call to call (ids and handles do).
        fn stable(v: &Value) -> Value {
            match v {
                Value::Object(m) => Value::Object(
                    m.iter()
                        .map(|(k, v)| match k.as_str() {
                            "MessageId" | "ReceiptHandle" => (k.clone(), json!("*")),
                            _ => (k.clone(), stable(v)),
                        })
                        .collect(),
                ),
                Value::Array(a) => Value::Array(a.iter().map(stable).collect()),
                other => other.clone(),
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn typed_and_value_paths_answer_alike() {
            let dir = std::env::temp_dir().join(format!("sqs-wire-{:x}", rand::random::<u64>()));
            let broker =
                Broker::open(CoreConfig { data_dir: dir.clone(), ..CoreConfig::default() }).await.expect("broker");
            let sqs = Sqs::new(broker.handle(), AwsConfig::default()).expect("sqs");
            for q in ["wq", "empty"] {
                let (status, _) =
                    answer(sqs.handle_json("CreateQueue", format!(r#"{{"QueueName":"{q}"}}"#).as_bytes(), "h").await)
                        .await;
                assert_eq!(status, 200);
            }
            let url = "http://h/000000000000/wq";
            let empty = "http://h/000000000000/empty";
            let eleven: Vec<String> = (0..11).map(|i| format!(r#"{{"Id":"e{i}","MessageBody":"b"}}"#)).collect();
            let cases: Vec<(&str, String)> = vec![
                ("SendMessageBatch", format!(r#"{{"QueueUrl":"{url}"}}"#)),
                ("SendMessageBatch", format!(r#"{{"QueueUrl":"{url}","Entries":[]}}"#)),
                ("SendMessageBatch", format!(r#"{{"QueueUrl":"{url}","Entries":null}}"#)),
                ("SendMessageBatch", format!(r#"{{"QueueUrl":"{url}","Entries":[{}]}}"#, eleven.join(","))),
                (
                    "SendMessageBatch",
                    format!(
                        r#"{{"QueueUrl":"{url}","Entries":[{{"Id":"a","MessageBody":"x"}},{{"Id":"a","MessageBody":"y"}}]}}"#
                    ),
                ),
                ("SendMessageBatch", format!(r#"{{"QueueUrl":"{url}","Entries":[{{"Id":"a b","MessageBody":"x"}}]}}"#)),
                ("SendMessageBatch", format!(r#"{{"QueueUrl":"{url}","Entries":[["a","x"]]}}"#)),
                ("SendMessageBatch", format!(r#"{{"QueueUrl":"{url}","Entries":[{{"Id":"a","MessageBody":5}}]}}"#)),
                (
                    "SendMessageBatch",
                    format!(r#"{{"QueueUrl":"{url}","Entries":[{{"Id":"a","MessageBody":"x","DelaySeconds":"5"}}]}}"#),
                ),
                (
                    "SendMessageBatch",
                    format!(
                        r#"{{"QueueUrl":"{url}","Entries":[{{"Id":"a","MessageBody":"x","DelaySeconds":1000}},{{"Id":"b","MessageBody":"\u0000"}},{{"Id":"c","MessageBody":"ok \"quoted\" \\ é"}},{{"Id":"d"}}]}}"#
                    ),
                ),
                (
                    "SendMessageBatch",
                    format!(
                        r#"{{"QueueUrl":"{url}","Entries":[{{"Id":"a","MessageBody":"x","MessageAttributes":null}}]}}"#
                    ),
                ),
                (
                    "SendMessageBatch",
                    format!(
                        r#"{{"QueueUrl":"{url}","Entries":[{{"Id":"a","MessageBody":"x","MessageAttributes":{{"n":{{"DataType":"Number","StringValue":"1.5"}}}}}}]}}"#
                    ),
                ),
                (
                    "SendMessageBatch",
                    r#"{"QueueUrl":"http://h/000000000000/nope","Entries":[{"Id":"a","MessageBody":"x"}]}"#.to_string(),
                ),
                ("SendMessageBatch", r#"[1]"#.to_string()),
                ("SendMessageBatch", r#"{"QueueUrl":"#.to_string()),
                ("SendMessageBatch", r#"{"QueueUrl":7}"#.to_string()),
                ("SendMessage", format!(r#"{{"QueueUrl":"{url}","MessageBody":"hello"}}"#)),
                ("SendMessage", format!(r#"{{"QueueUrl":"{url}"}}"#)),
                ("SendMessage", format!(r#"{{"QueueUrl":"{url}","MessageBody":""}}"#)),
                ("SendMessage", format!(r#"{{"QueueUrl":"{url}","MessageBody":"x","MessageDeduplicationId":"d"}}"#)),
                ("ReceiveMessage", format!(r#"{{"QueueUrl":"{empty}"}}"#)),
                ("ReceiveMessage", format!(r#"{{"QueueUrl":"{empty}","MaxNumberOfMessages":11}}"#)),
                ("ReceiveMessage", format!(r#"{{"QueueUrl":"{empty}","MaxNumberOfMessages":1.5}}"#)),
                ("ReceiveMessage", format!(r#"{{"QueueUrl":"{empty}","VisibilityTimeout":-1}}"#)),
                ("ReceiveMessage", format!(r#"{{"QueueUrl":"{empty}","WaitTimeSeconds":21}}"#)),
                ("ReceiveMessage", format!(r#"{{"QueueUrl":"{empty}","AttributeNames":["Bogus"]}}"#)),
                ("ReceiveMessage", format!(r#"{{"QueueUrl":"{empty}","MessageAttributeNames":[1]}}"#)),
                ("ReceiveMessage", format!(r#"{{"QueueUrl":"{empty}","MessageAttributeNames":"All"}}"#)),
                ("DeleteMessageBatch", format!(r#"{{"QueueUrl":"{url}"}}"#)),
                (
                    "DeleteMessageBatch",
                    format!(r#"{{"QueueUrl":"{url}","Entries":[{{"Id":"a","ReceiptHandle":"junk"}},{{"Id":"b"}}]}}"#),
                ),
                ("DeleteMessage", format!(r#"{{"QueueUrl":"{url}"}}"#)),
                ("DeleteMessage", format!(r#"{{"QueueUrl":"{url}","ReceiptHandle":"junk"}}"#)),
                ("DeleteMessage", format!(r#"{{"QueueUrl":"{url}","ReceiptHandle":["x"]}}"#)),
            ];
            for (action, body) in &cases {
                let typed = answer(sqs.handle_json(action, body.as_bytes(), "h").await).await;
                let old = old_path(&sqs, action, body).await;
                assert_eq!(typed.0, old.0, "{action} {body}: status");
                assert_eq!(stable(&typed.1), stable(&old.1), "{action} {body}: answer");
            }
            // A message sent by the typed path is received and deleted by it, with the MD5 boto3 checks.
            let body = "round \"trip\" \\ é";
            let send = json!({"QueueUrl": empty, "Entries": [{"Id": "x", "MessageBody": body}]}).to_string();
            let (status, sent) = answer(sqs.handle_json("SendMessageBatch", send.as_bytes(), "h").await).await;
            assert_eq!(status, 200);
            let md5 = crate::md5::md5_hex(body.as_bytes());
            assert_eq!(sent["Successful"][0]["MD5OfMessageBody"], json!(md5));
            let receive = json!({"QueueUrl": empty, "MaxNumberOfMessages": 10}).to_string();
            let (_, got) = answer(sqs.handle_json("ReceiveMessage", receive.as_bytes(), "h").await).await;
            let m = &got["Messages"][0];
            assert_eq!((m["Body"].as_str(), m["MD5OfBody"].as_str()), (Some(body), Some(md5.as_str())));
            let delete =
                json!({"QueueUrl": empty, "Entries": [{"Id": "d", "ReceiptHandle": m["ReceiptHandle"]}]}).to_string();
            let (_, deleted) = answer(sqs.handle_json("DeleteMessageBatch", delete.as_bytes(), "h").await).await;
            assert_eq!(deleted, json!({"Successful": [{"Id": "d"}], "Failed": []}));
            drop(sqs);
            drop(broker);
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
