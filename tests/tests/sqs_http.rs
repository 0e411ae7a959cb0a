//! SQS over raw HTTP/1.1 against the real binary: a few AWS JSON 1.0 calls end to end and
//! malformed requests (bad JSON, unknown target, missing parameters, an oversize body),
//! each answered with AWS's error shape while the broker keeps serving. The client is a
//! few lines over `TcpStream`, independent of the server's HTTP stack.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::Broker;

/// A parsed HTTP response.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
    /// `(status, __type, x-amzn-query-error)`.
    fn error(&self) -> (u16, String, String) {
        let t = self.json()["__type"].as_str().unwrap_or_default().to_string();
        (self.status, t, self.header("x-amzn-query-error").unwrap_or_default().to_string())
    }
}

fn aws(broker: &Broker) -> SocketAddr {
    *broker.listeners.get("aws").expect("the ready line names an aws listener")
}

/// One request on a fresh connection (`Connection: close`), read to the end.
fn request(addr: SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut head =
        format!("POST / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("write head");
    // The server may answer (413) before the whole body is sent; a failed write is fine then.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse(&raw)
}

fn parse(raw: &[u8]) -> Resp {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no header end: {raw:?}"));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("status line");
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let n = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + n]);
            rest = &rest[eol + 2 + n + 2..];
        }
        body = out;
    }
    Resp { status, headers, body }
}

fn call(addr: SocketAddr, action: &str, input: &Value) -> Resp {
    let target = format!("AmazonSQS.{action}");
    request(
        addr,
        &[("Content-Type", "application/x-amz-json-1.0"), ("X-Amz-Target", &target)],
        input.to_string().as_bytes(),
    )
}

#[test]
fn json_protocol_round_trip() {
    let broker = Broker::start();
    let addr = aws(&broker);
    let r = call(addr, "CreateQueue", &json!({"QueueName": "raw-orders", "Attributes": {"VisibilityTimeout": "7"}}));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/x-amz-json-1.0"));
    let url = r.json()["QueueUrl"].as_str().expect("QueueUrl").to_string();
    assert_eq!(url, format!("http://{addr}/000000000000/raw-orders"));

    let r = call(addr, "SendMessage", &json!({"QueueUrl": url, "MessageBody": "hello"}));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["MD5OfMessageBody"], "5d41402abc4b2a76b9719d911017c592");

    let r = call(addr, "ReceiveMessage", &json!({"QueueUrl": url, "AttributeNames": ["ApproximateReceiveCount"]}));
    let m = &r.json()["Messages"][0];
    assert_eq!(m["Body"], "hello", "{r:?}");
    assert_eq!(m["Attributes"]["ApproximateReceiveCount"], "1");
    let handle = m["ReceiptHandle"].as_str().expect("handle").to_string();

    let r = call(addr, "GetQueueAttributes", &json!({"QueueUrl": url, "AttributeNames": ["All"]}));
    let a = &r.json()["Attributes"];
    assert_eq!(a["VisibilityTimeout"], "7");
    assert_eq!(a["ApproximateNumberOfMessagesNotVisible"], "1");

    let r = call(addr, "DeleteMessage", &json!({"QueueUrl": url, "ReceiptHandle": handle}));
    assert_eq!(r.status, 200, "{r:?}");
    let r = call(addr, "ReceiveMessage", &json!({"QueueUrl": url}));
    assert_eq!(r.json(), json!({}));
    let r = call(addr, "DeleteQueue", &json!({"QueueUrl": url}));
    assert_eq!(r.status, 200, "{r:?}");
}

fn form(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write head");
    s.write_all(body.as_bytes()).expect("write body");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let r = parse(&raw);
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

/// Between `<tag>` and `</tag>`, the first occurrence.
fn xml_text<'a>(xml: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let start = xml.find(&open).unwrap_or_else(|| panic!("no <{tag}> in {xml}")) + open.len();
    let end = xml[start..].find(&format!("</{tag}>")).expect("closing tag") + start;
    &xml[start..end]
}

#[test]
fn query_protocol_round_trip() {
    let broker = Broker::start();
    let addr = aws(&broker);
    let (status, xml) = form(
        addr,
        "/",
        "Action=CreateQueue&Version=2012-11-05&QueueName=q-xml&Attribute.1.Name=VisibilityTimeout&Attribute.1.Value=9",
    );
    assert_eq!(status, 200, "{xml}");
    assert!(xml.contains("<CreateQueueResponse xmlns=\"http://queue.amazonaws.com/doc/2012-11-05/\">"), "{xml}");
    assert_eq!(xml_text(&xml, "QueueUrl"), format!("http://{addr}/000000000000/q-xml"));

    // Posted to the queue URL, without a QueueUrl parameter, as older SDKs do.
    let (status, xml) = form(
        addr,
        "/000000000000/q-xml",
        "Action=SendMessage&MessageBody=a%3Cb%26c&MessageAttribute.1.Name=k\
         &MessageAttribute.1.Value.DataType=String&MessageAttribute.1.Value.StringValue=v",
    );
    assert_eq!(status, 200, "{xml}");
    assert_eq!(xml_text(&xml, "MD5OfMessageBody").len(), 32);

    let (status, xml) =
        form(addr, "/000000000000/q-xml", "Action=ReceiveMessage&AttributeName.1=All&MessageAttributeName.1=All");
    assert_eq!(status, 200, "{xml}");
    assert_eq!(xml_text(&xml, "Body"), "a&lt;b&amp;c");
    assert!(xml.contains("<Attribute><Name>ApproximateReceiveCount</Name><Value>1</Value></Attribute>"), "{xml}");
    assert!(xml.contains("<MessageAttribute><Name>k</Name><Value><DataType>String</DataType><StringValue>v</StringValue></Value></MessageAttribute>"), "{xml}");
    let handle = xml_text(&xml, "ReceiptHandle").to_string();

    let (status, xml) = form(
        addr,
        "/",
        &format!(
            "Action=DeleteMessageBatch&QueueUrl=http://{addr}/000000000000/q-xml&DeleteMessageBatchRequestEntry.1.Id=a&DeleteMessageBatchRequestEntry.1.ReceiptHandle={handle}"
        ),
    );
    assert_eq!(status, 200, "{xml}");
    assert!(xml.contains("<DeleteMessageBatchResultEntry><Id>a</Id></DeleteMessageBatchResultEntry>"), "{xml}");

    let (status, xml) = form(addr, "/", "Action=GetQueueUrl&QueueName=missing");
    assert_eq!(status, 400, "{xml}");
    assert_eq!(xml_text(&xml, "Code"), "AWS.SimpleQueueService.NonExistentQueue");
    assert_eq!(xml_text(&xml, "Type"), "Sender");
}

#[test]
fn a_handle_from_a_deleted_queue_does_not_touch_its_successor() {
    let broker = Broker::start();
    let addr = aws(&broker);
    let url = format!("http://{addr}/000000000000/reborn");
    let receive = || {
        let r = call(addr, "ReceiveMessage", &json!({"QueueUrl": url}));
        r.json()["Messages"][0]["ReceiptHandle"].as_str().expect("a message").to_string()
    };
    for _ in 0..2 {
        assert_eq!(call(addr, "CreateQueue", &json!({"QueueName": "reborn"})).status, 200);
        assert_eq!(call(addr, "SendMessage", &json!({"QueueUrl": url, "MessageBody": "m"})).status, 200);
    }
    let _ = receive();
    let old = receive();
    assert_eq!(call(addr, "DeleteQueue", &json!({"QueueUrl": url})).status, 200);
    assert_eq!(call(addr, "CreateQueue", &json!({"QueueName": "reborn"})).status, 200);
    for _ in 0..2 {
        assert_eq!(call(addr, "SendMessage", &json!({"QueueUrl": url, "MessageBody": "n"})).status, 200);
        let _ = receive();
    }
    // Same lease ids as before, but another queue instance: the old handle is stale.
    assert_eq!(call(addr, "DeleteMessage", &json!({"QueueUrl": url, "ReceiptHandle": old})).status, 200);
    let r =
        call(addr, "ChangeMessageVisibility", &json!({"QueueUrl": url, "ReceiptHandle": old, "VisibilityTimeout": 0}));
    assert_eq!(r.error().2, "AWS.SimpleQueueService.MessageNotInflight;Sender");
    let r = call(
        addr,
        "GetQueueAttributes",
        &json!({"QueueUrl": url, "AttributeNames": ["ApproximateNumberOfMessagesNotVisible"]}),
    );
    assert_eq!(r.json()["Attributes"]["ApproximateNumberOfMessagesNotVisible"], "2", "both new leases still held");
}

#[test]
fn malformed_requests_get_aws_errors() {
    let broker = Broker::start_with("[aws]\nmax_body_bytes = 65536\n", &[]);
    let addr = aws(&broker);
    let sqs = "com.amazonaws.sqs#";

    let r = request(addr, &[("X-Amz-Target", "AmazonSQS.CreateQueue")], b"{not json");
    assert_eq!(r.error(), (400, format!("{sqs}SerializationException"), "SerializationException;Sender".into()));

    let r = request(addr, &[("X-Amz-Target", "AmazonSQS.CreateQueue")], b"[1,2]");
    assert_eq!(r.error().1, format!("{sqs}SerializationException"));

    let r = call(addr, "NoSuchAction", &json!({}));
    assert_eq!(r.error(), (400, format!("{sqs}UnknownOperationException"), "InvalidAction;Sender".into()));

    let r = request(addr, &[("X-Amz-Target", "Bogus_2020.Thing")], b"{}");
    assert_eq!(r.error().1, format!("{sqs}UnknownOperationException"));

    let r = request(addr, &[], b"Action=NoSuchAction&Version=2012-11-05");
    assert_eq!(r.status, 400, "{r:?}");
    assert!(String::from_utf8_lossy(&r.body).contains("<Code>InvalidAction</Code>"), "{r:?}");

    let r = call(addr, "CreateQueue", &json!({}));
    assert_eq!(r.error(), (400, format!("{sqs}MissingParameter"), "MissingParameter;Sender".into()));

    let r = call(addr, "SendMessage", &json!({"QueueUrl": "http://x/000000000000/none", "MessageBody": "x"}));
    assert_eq!(
        r.error(),
        (400, format!("{sqs}QueueDoesNotExist"), "AWS.SimpleQueueService.NonExistentQueue;Sender".into())
    );

    let r = call(addr, "CreateQueue", &json!({"QueueName": 5}));
    assert_eq!(r.error().1, format!("{sqs}SerializationException"));

    let huge = vec![b'x'; 200_000];
    let r = request(addr, &[("X-Amz-Target", "AmazonSQS.SendMessage")], &huge);
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.json()["__type"], format!("{sqs}RequestEntityTooLarge"));

    // Still serving.
    let r = call(addr, "ListQueues", &json!({}));
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn attributes_tags_and_permissions_survive_a_restart() {
    let mut broker = Broker::start();
    let addr = aws(&broker);
    let r = call(addr, "CreateQueue", &json!({"QueueName": "kept", "tags": {"team": "a"}}));
    let url = r.json()["QueueUrl"].as_str().expect("QueueUrl").to_string();
    let set = json!({"QueueUrl": url, "Attributes": {
        "VisibilityTimeout": "9", "DelaySeconds": "2", "MessageRetentionPeriod": "600",
        "RedriveAllowPolicy": "{\"redrivePermission\":\"denyAll\"}"}});
    assert_eq!(call(addr, "SetQueueAttributes", &set).status, 200);
    assert_eq!(call(addr, "TagQueue", &json!({"QueueUrl": url, "Tags": {"env": "qa"}})).status, 200);
    let perm = json!({"QueueUrl": url, "Label": "l", "AWSAccountIds": ["123456789012"], "Actions": ["SendMessage"]});
    assert_eq!(call(addr, "AddPermission", &perm).status, 200);
    let before = call(addr, "GetQueueAttributes", &json!({"QueueUrl": url, "AttributeNames": ["All"]})).json();

    broker.restart();
    let addr = aws(&broker);
    let url = format!("http://{addr}/000000000000/kept");
    let after = call(addr, "GetQueueAttributes", &json!({"QueueUrl": url, "AttributeNames": ["All"]})).json();
    let a = &after["Attributes"];
    assert_eq!(a["VisibilityTimeout"], "9", "{after}");
    assert_eq!(a["DelaySeconds"], "2");
    assert_eq!(a["MessageRetentionPeriod"], "600");
    assert_eq!(a["RedriveAllowPolicy"], "{\"redrivePermission\":\"denyAll\"}");
    assert!(a["Policy"].as_str().is_some_and(|p| p.contains("arn:aws:iam::123456789012:root")), "{after}");
    assert_eq!(a["LastModifiedTimestamp"], before["Attributes"]["LastModifiedTimestamp"]);
    let tags = call(addr, "ListQueueTags", &json!({"QueueUrl": url})).json();
    assert_eq!(tags, json!({"Tags": {"team": "a", "env": "qa"}}));
    // The core runs on the changed settings: a new message is delayed by 2 s.
    assert_eq!(call(addr, "SendMessage", &json!({"QueueUrl": url, "MessageBody": "x"})).status, 200);
    let r = call(
        addr,
        "GetQueueAttributes",
        &json!({"QueueUrl": url, "AttributeNames": ["ApproximateNumberOfMessagesDelayed"]}),
    );
    assert_eq!(r.json()["Attributes"]["ApproximateNumberOfMessagesDelayed"], "1");
}

#[test]
fn validation_errors_for_new_actions() {
    let broker = Broker::start();
    let addr = aws(&broker);
    let sqs = "com.amazonaws.sqs#";
    let r = call(addr, "CreateQueue", &json!({"QueueName": "v", "Attributes": {"Bogus": "1"}}));
    assert_eq!(r.error(), (400, format!("{sqs}InvalidAttributeName"), "InvalidAttributeName;Sender".into()));
    let r = call(addr, "CreateQueue", &json!({"QueueName": "v", "Attributes": {"QueueArn": "x"}}));
    assert_eq!(r.error().1, format!("{sqs}InvalidAttributeName"));
    let r = call(addr, "CreateQueue", &json!({"QueueName": "v", "Attributes": {"DeduplicationScope": "queue"}}));
    assert_eq!(r.error().1, format!("{sqs}InvalidAttributeName"), "FIFO-only attribute on a standard queue");
    let url =
        call(addr, "CreateQueue", &json!({"QueueName": "v"})).json()["QueueUrl"].as_str().expect("url").to_string();
    let r = call(addr, "TagQueue", &json!({"QueueUrl": url}));
    assert_eq!(r.error().2, "MissingParameter;Sender");
    let r = call(addr, "UntagQueue", &json!({"QueueUrl": url, "TagKeys": "notalist"}));
    assert_eq!(r.error().1, format!("{sqs}SerializationException"));
    let r = call(addr, "RemovePermission", &json!({"QueueUrl": url, "Label": "none"}));
    assert_eq!(r.error().2, "InvalidParameterValue;Sender");
    let r = call(addr, "CancelMessageMoveTask", &json!({"TaskHandle": "x"}));
    assert_eq!(r.error(), (400, format!("{sqs}ResourceNotFoundException"), "ResourceNotFoundException;Sender".into()));
    let r = call(addr, "StartMessageMoveTask", &json!({"SourceArn": "not-an-arn"}));
    assert_eq!(r.error().2, "InvalidParameterValue;Sender");
    let r = call(addr, "ListDeadLetterSourceQueues", &json!({"QueueUrl": url, "MaxResults": 0}));
    assert_eq!(r.error().2, "InvalidParameterValue;Sender");
    let r = call(addr, "ReceiveMessage", &json!({"QueueUrl": url, "ReceiveRequestAttemptId": ""}));
    assert_eq!(r.error().2, "InvalidParameterValue;Sender");
}

#[test]
fn strict_sigv4_refuses_unsigned_and_malformed_requests() {
    let broker = Broker::start_with("[aws]\nauth = \"sigv4\"\n[aws.credentials]\nAKID = \"secret\"\n", &[]);
    let addr = aws(&broker);
    let r = call(addr, "ListQueues", &json!({}));
    assert_eq!(
        r.error(),
        (403, "com.amazonaws.sqs#MissingAuthenticationToken".into(), "MissingAuthenticationToken;Sender".into())
    );
    let r = request(
        addr,
        &[("X-Amz-Target", "AmazonSQS.ListQueues"), ("Authorization", "AWS4-HMAC-SHA256 Credential=AKID/bogus")],
        b"{}",
    );
    assert_eq!(r.error().2, "IncompleteSignature;Sender", "{r:?}");
    let auth = "AWS4-HMAC-SHA256 Credential=NOPE/20250101/us-east-1/sqs/aws4_request, SignedHeaders=host;x-amz-date, Signature=00";
    let r = request(
        addr,
        &[("X-Amz-Target", "AmazonSQS.ListQueues"), ("X-Amz-Date", "20250101T000000Z"), ("Authorization", auth)],
        b"{}",
    );
    assert_eq!(r.error().2, "InvalidClientTokenId;Sender", "{r:?}");
    let auth = "AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/sqs/aws4_request, SignedHeaders=host;x-amz-date, Signature=00";
    let r = request(
        addr,
        &[("X-Amz-Target", "AmazonSQS.ListQueues"), ("X-Amz-Date", "20250101T000000Z"), ("Authorization", auth)],
        b"{}",
    );
    assert_eq!(r.error().2, "RequestExpired;Sender", "a year-old signature: {r:?}");
    // The query protocol answers in XML.
    let (status, xml) = form(addr, "/", "Action=ListQueues");
    assert_eq!(status, 403, "{xml}");
    assert_eq!(xml_text(&xml, "Code"), "MissingAuthenticationToken");
}

/// A keep-alive HTTP/1.1 connection for many requests (the 120,000-message test).
struct KeepAlive {
    s: TcpStream,
    buf: Vec<u8>,
    addr: SocketAddr,
}

impl KeepAlive {
    fn new(addr: SocketAddr) -> KeepAlive {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        KeepAlive { s, buf: Vec::new(), addr }
    }

    fn call(&mut self, action: &str, input: &Value) -> (u16, Value) {
        let body = input.to_string();
        let head = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nX-Amz-Target: AmazonSQS.{action}\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        self.s.write_all(head.as_bytes()).expect("write");
        self.s.write_all(body.as_bytes()).expect("write");
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let len: usize = head
                    .split("\r\n")
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                    .and_then(|v| v.parse().ok())
                    .expect("content-length");
                if self.buf.len() >= end + 4 + len {
                    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
                    let v = serde_json::from_slice(&self.buf[end + 4..end + 4 + len]).expect("json");
                    self.buf.drain(..end + 4 + len);
                    return (status, v);
                }
            }
            let mut chunk = [0u8; 65536];
            let n = self.s.read(&mut chunk).expect("read");
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[test]
fn in_flight_limit_is_120000_then_over_limit() {
    let broker = Broker::start();
    let addr = aws(&broker);
    let url = call(addr, "CreateQueue", &json!({"QueueName": "busy", "Attributes": {"VisibilityTimeout": "600"}}))
        .json()["QueueUrl"]
        .as_str()
        .expect("url")
        .to_string();
    const LIMIT: usize = 120_000;
    const THREADS: usize = 4;
    let per_thread = LIMIT / THREADS;
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut c = KeepAlive::new(addr);
                let entries: Vec<Value> = (0..10).map(|i| json!({"Id": format!("e{i}"), "MessageBody": "m"})).collect();
                for _ in 0..per_thread / 10 {
                    let (status, v) = c.call("SendMessageBatch", &json!({"QueueUrl": url, "Entries": entries}));
                    assert_eq!(status, 200, "{v}");
                }
                let mut got = 0;
                while got < per_thread {
                    let (status, v) = c.call("ReceiveMessage", &json!({"QueueUrl": url, "MaxNumberOfMessages": 10}));
                    assert_eq!(status, 200, "{v}");
                    got += v["Messages"].as_array().map_or(0, Vec::len);
                }
                got
            })
        })
        .collect();
    let total: usize = workers.into_iter().map(|w| w.join().expect("worker")).sum();
    assert_eq!(total, LIMIT);
    assert_eq!(call(addr, "SendMessage", &json!({"QueueUrl": url, "MessageBody": "one more"})).status, 200);
    let r = call(addr, "ReceiveMessage", &json!({"QueueUrl": url}));
    assert_eq!(r.error(), (400, "com.amazonaws.sqs#OverLimit".into(), "OverLimit;Sender".into()));
    // A long poll at the limit answers empty instead.
    let r = call(addr, "ReceiveMessage", &json!({"QueueUrl": url, "WaitTimeSeconds": 1}));
    assert_eq!((r.status, r.json()), (200, json!({})));
}

#[test]
fn reset_hook_is_off_by_default_and_empties_sqs_when_on() {
    let broker = Broker::start();
    let r = call(aws(&broker), "SwitchyardReset", &json!({}));
    assert_eq!(r.error().1, "com.amazonaws.sqs#UnknownOperationException");
    drop(broker);

    let broker = Broker::start_with("[aws]\ntest_hooks = true\n", &[]);
    let addr = aws(&broker);
    for n in ["r1", "r2.fifo"] {
        let attrs = if n.ends_with(".fifo") { json!({"FifoQueue": "true"}) } else { json!({}) };
        assert_eq!(call(addr, "CreateQueue", &json!({"QueueName": n, "Attributes": attrs})).status, 200);
    }
    let url = format!("http://{addr}/000000000000/r1");
    assert_eq!(call(addr, "SendMessage", &json!({"QueueUrl": url, "MessageBody": "x"})).status, 200);
    let r = call(addr, "SwitchyardReset", &json!({}));
    assert_eq!(r.json(), json!({"QueuesDeleted": 2}));
    assert_eq!(call(addr, "ListQueues", &json!({})).json(), json!({}));
    // A queue of the same name starts empty.
    assert_eq!(call(addr, "CreateQueue", &json!({"QueueName": "r1"})).status, 200);
    assert_eq!(call(addr, "ReceiveMessage", &json!({"QueueUrl": url})).json(), json!({}));
}

#[test]
fn clock_hook_passes_visibility_delay_retention_and_dedup_windows_without_waiting() {
    let broker = Broker::start();
    let r = call(aws(&broker), "SwitchyardAdvanceClock", &json!({"Millis": 1000}));
    assert_eq!(r.error().1, "com.amazonaws.sqs#UnknownOperationException", "off by default");
    drop(broker);

    let broker = Broker::start_with("[aws]\ntest_hooks = true\n", &[]);
    let addr = aws(&broker);
    let create = |n: &str, attrs: Value| {
        let r = call(addr, "CreateQueue", &json!({"QueueName": n, "Attributes": attrs}));
        assert_eq!(r.status, 200, "{n}");
        format!("http://{addr}/000000000000/{n}")
    };
    let advance = |ms: u64| {
        let r = call(addr, "SwitchyardAdvanceClock", &json!({"Millis": ms}));
        assert_eq!(r.status, 200);
        r.json()["Now"].as_u64().expect("Now")
    };
    let receive = |url: &str| {
        let r = call(
            addr,
            "ReceiveMessage",
            &json!({"QueueUrl": url, "MessageSystemAttributeNames": ["ApproximateReceiveCount"]}),
        );
        r.json()["Messages"].as_array().cloned().unwrap_or_default()
    };

    // A 12-hour visibility timeout ends at once.
    let vis = create("clk-vis", json!({"VisibilityTimeout": "43200"}));
    assert_eq!(call(addr, "SendMessage", &json!({"QueueUrl": vis, "MessageBody": "v"})).status, 200);
    assert_eq!(receive(&vis).len(), 1);
    assert!(receive(&vis).is_empty(), "leased for 12 hours");
    let before = advance(0);
    assert!(advance(43_200_000) >= before + 43_200_000);
    let again = receive(&vis);
    assert_eq!(again.len(), 1, "visible again after the clock passed the timeout");
    assert_eq!(again[0]["Attributes"]["ApproximateReceiveCount"], "2");

    // A 15-minute delay.
    let delayed = create("clk-delay", json!({}));
    let r = call(addr, "SendMessage", &json!({"QueueUrl": delayed, "MessageBody": "d", "DelaySeconds": 900}));
    assert_eq!(r.status, 200);
    assert!(receive(&delayed).is_empty());
    advance(900_000);
    assert_eq!(receive(&delayed).len(), 1, "delivered once its delay passed");

    // Retention: a 60 s retention period drops the message.
    let short = create("clk-retain", json!({"MessageRetentionPeriod": "60"}));
    assert_eq!(call(addr, "SendMessage", &json!({"QueueUrl": short, "MessageBody": "r"})).status, 200);
    advance(61_000);
    assert!(receive(&short).is_empty(), "gone after its retention period");

    // The FIFO deduplication window of 5 minutes.
    let fifo = create("clk.fifo", json!({"FifoQueue": "true"}));
    let send = || {
        let input =
            json!({"QueueUrl": fifo, "MessageBody": "f", "MessageGroupId": "g", "MessageDeduplicationId": "same"});
        call(addr, "SendMessage", &input).json()["MessageId"].as_str().expect("MessageId").to_string()
    };
    let first = send();
    assert_eq!(send(), first, "a duplicate inside the window");
    advance(300_001);
    assert_ne!(send(), first, "accepted again after the window");

    // PurgeQueue: one per 60 s per queue; the clock passes the interval too.
    let purged = create("clk-purge", json!({}));
    assert_eq!(call(addr, "PurgeQueue", &json!({"QueueUrl": purged})).status, 200);
    let r = call(addr, "PurgeQueue", &json!({"QueueUrl": purged}));
    assert_eq!(r.error().1, "com.amazonaws.sqs#PurgeQueueInProgress");
    assert_eq!(r.header("x-amzn-query-error"), Some("AWS.SimpleQueueService.PurgeQueueInProgress;Sender"));
    advance(60_000);
    assert_eq!(call(addr, "PurgeQueue", &json!({"QueueUrl": purged})).status, 200);

    let r = call(addr, "SwitchyardAdvanceClock", &json!({"Millis": -1}));
    assert_eq!((r.status, r.error().1.as_str()), (400, "com.amazonaws.sqs#InvalidParameterValue"));
}
