//! Table tests per operator (both scopes), validation limits with SNS's texts, and property
//! tests.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::message::{FieldTable, FieldValue};

/// Message attributes in SNS's shape: `(name, type, value)`.
fn attrs(list: &[(&str, &str, &str)]) -> FieldTable {
    let mut t = FieldTable::new();
    for (k, ty, v) in list {
        t.insert(k.to_string(), FieldValue::text(v));
        if *ty != "String" {
            t.insert(format!("{}{k}", view::TYPE_HEADER_PREFIX), FieldValue::text(ty));
        }
    }
    t
}

fn attr_match(policy: serde_json::Value, list: &[(&str, &str, &str)]) -> bool {
    let p = parse(&policy.to_string(), Scope::MessageAttributes).expect("valid policy");
    let h = attrs(list);
    p.matches(&MessageView::new(Some(&h), b""))
}

fn body_match(policy: serde_json::Value, body: serde_json::Value) -> bool {
    let p = parse(&policy.to_string(), Scope::MessageBody).expect("valid policy");
    let b = body.to_string();
    p.matches(&MessageView::new(None, b.as_bytes()))
}

fn err(policy: serde_json::Value, scope: Scope) -> String {
    parse(&policy.to_string(), scope).expect_err("invalid policy").0
}

/// One operator: (policy value for key `k`, attributes-scope cases, body-scope cases).
struct Case {
    cond: serde_json::Value,
    attr_yes: Vec<(&'static str, &'static str)>,
    attr_no: Vec<(&'static str, &'static str)>,
    body_yes: Vec<serde_json::Value>,
    body_no: Vec<serde_json::Value>,
}

fn cases() -> Vec<(&'static str, Case)> {
    vec![
        (
            "exact string",
            Case {
                cond: json!(["red", "green"]),
                attr_yes: vec![("String", "red"), ("String", "green"), ("String.Array", r#"["blue","red"]"#)],
                attr_no: vec![("String", "blue"), ("String", "Red"), ("Number", "5"), ("String.Array", r#"["x"]"#)],
                body_yes: vec![json!("red"), json!(["blue", "green"])],
                body_no: vec![json!("blue"), json!(5), json!({"red": 1})],
            },
        ),
        (
            "exact number",
            Case {
                cond: json!([5, 10.5]),
                attr_yes: vec![("Number", "5"), ("Number", "5.0"), ("Number", "10.50000"), ("String.Array", "[1, 5]")],
                attr_no: vec![("Number", "6"), ("String", "5"), ("Number", "5.1")],
                body_yes: vec![json!(5), json!(10.5), json!([3, 5])],
                body_no: vec![json!("5"), json!(6)],
            },
        ),
        (
            "true/false/null",
            Case {
                cond: json!([true, null]),
                attr_yes: vec![("String.Array", "[false, true]"), ("String.Array", "[null]")],
                attr_no: vec![("String", "true"), ("String.Array", "[false]")],
                body_yes: vec![json!(true), json!(null)],
                body_no: vec![json!(false), json!("true")],
            },
        ),
        (
            "prefix",
            Case {
                cond: json!([{"prefix": "eu-"}]),
                attr_yes: vec![("String", "eu-west-1"), ("String.Array", r#"["us-1","eu-2"]"#)],
                attr_no: vec![("String", "us-east-1"), ("Number", "5")],
                body_yes: vec![json!("eu-central-1")],
                body_no: vec![json!("us"), json!(7)],
            },
        ),
        (
            "suffix",
            Case {
                cond: json!([{"suffix": ".png"}]),
                attr_yes: vec![("String", "a.png")],
                attr_no: vec![("String", "a.jpg")],
                body_yes: vec![json!("photo.png")],
                body_no: vec![json!("png.jpg")],
            },
        ),
        (
            "equals-ignore-case",
            Case {
                cond: json!([{"equals-ignore-case": "ReD"}]),
                attr_yes: vec![("String", "red"), ("String", "RED")],
                attr_no: vec![("String", "reds")],
                body_yes: vec![json!("Red")],
                body_no: vec![json!("blue")],
            },
        ),
        (
            "anything-but list",
            Case {
                cond: json!([{"anything-but": ["red", "green"]}]),
                attr_yes: vec![("String", "blue"), ("Number", "3"), ("String.Array", r#"["blue","pink"]"#)],
                attr_no: vec![("String", "red"), ("String.Array", r#"["blue","red"]"#)],
                body_yes: vec![json!("blue")],
                body_no: vec![json!("green"), json!(["green", "x"])],
            },
        ),
        (
            "anything-but number",
            Case {
                cond: json!([{"anything-but": 100}]),
                attr_yes: vec![("Number", "101"), ("String", "100")],
                attr_no: vec![("Number", "100")],
                body_yes: vec![json!(99)],
                body_no: vec![json!(100)],
            },
        ),
        (
            "anything-but prefix",
            Case {
                cond: json!([{"anything-but": {"prefix": "tmp"}}]),
                attr_yes: vec![("String", "prod")],
                attr_no: vec![("String", "tmp-1"), ("Number", "5")],
                body_yes: vec![json!("prod")],
                body_no: vec![json!("tmpfile")],
            },
        ),
        (
            "anything-but suffix",
            Case {
                cond: json!([{"anything-but": {"suffix": ".tmp"}}]),
                attr_yes: vec![("String", "a.txt")],
                attr_no: vec![("String", "a.tmp")],
                body_yes: vec![json!("a.txt")],
                body_no: vec![json!("b.tmp")],
            },
        ),
        (
            "anything-but equals-ignore-case",
            Case {
                cond: json!([{"anything-but": {"equals-ignore-case": ["RED", "blue"]}}]),
                attr_yes: vec![("String", "green")],
                attr_no: vec![("String", "Red"), ("String", "BLUE")],
                body_yes: vec![json!("green")],
                body_no: vec![json!("red")],
            },
        ),
        (
            "numeric equals",
            Case {
                cond: json!([{"numeric": ["=", 301.5]}]),
                attr_yes: vec![("Number", "301.5"), ("Number", "3.015e2")],
                attr_no: vec![("Number", "301"), ("String", "301.5")],
                body_yes: vec![json!(301.5)],
                body_no: vec![json!(300)],
            },
        ),
        (
            "numeric range",
            Case {
                cond: json!([{"numeric": [">", 0, "<=", 150]}]),
                attr_yes: vec![("Number", "0.00001"), ("Number", "150"), ("String.Array", "[-1, 20]")],
                attr_no: vec![("Number", "0"), ("Number", "150.01"), ("Number", "-3")],
                body_yes: vec![json!(1), json!(150)],
                body_no: vec![json!(0), json!(151), json!("5")],
            },
        ),
        (
            "numeric open range",
            Case {
                cond: json!([{"numeric": ["<", 0]}, {"numeric": [">=", 1000]}]),
                attr_yes: vec![("Number", "-1"), ("Number", "1000")],
                attr_no: vec![("Number", "0"), ("Number", "999.99")],
                body_yes: vec![json!(-5), json!(1e4)],
                body_no: vec![json!(500)],
            },
        ),
        (
            "cidr",
            Case {
                cond: json!([{"cidr": "10.0.0.0/24"}, {"cidr": "2001:db8::/32"}]),
                attr_yes: vec![("String", "10.0.0.7"), ("String", "2001:db8::5")],
                attr_no: vec![("String", "10.0.1.7"), ("String", "nope")],
                body_yes: vec![json!("10.0.0.200")],
                body_no: vec![json!("192.168.0.1")],
            },
        ),
        (
            "exists true",
            Case {
                cond: json!([{"exists": true}]),
                attr_yes: vec![("String", "x"), ("Number", "1")],
                attr_no: vec![],
                body_yes: vec![json!("x"), json!({"nested": 1})],
                body_no: vec![],
            },
        ),
    ]
}

#[test]
fn every_operator_in_both_scopes() {
    for (name, c) in cases() {
        let policy = json!({ "k": c.cond });
        for (ty, v) in &c.attr_yes {
            assert!(attr_match(policy.clone(), &[("k", ty, v)]), "{name}: attribute {ty} {v} should match");
        }
        for (ty, v) in &c.attr_no {
            assert!(!attr_match(policy.clone(), &[("k", ty, v)]), "{name}: attribute {ty} {v} should not match");
        }
        let is_exists_false = c.cond == json!([{"exists": false}]);
        assert_eq!(attr_match(policy.clone(), &[("other", "String", "x")]), is_exists_false, "{name}: absent key");
        let nested = json!({ "a": { "k": c.cond } });
        for v in &c.body_yes {
            assert!(body_match(policy.clone(), json!({ "k": v })), "{name}: body {v} should match");
            assert!(body_match(nested.clone(), json!({ "a": { "k": v } })), "{name}: nested body {v} should match");
            assert!(
                body_match(nested.clone(), json!({ "a": [{ "k": "zzz-no" }, { "k": v }] })),
                "{name}: body {v} inside an array of objects should match"
            );
        }
        for v in &c.body_no {
            assert!(!body_match(policy.clone(), json!({ "k": v })), "{name}: body {v} should not match");
            assert!(!body_match(nested.clone(), json!({ "a": { "k": v } })), "{name}: nested body {v} should not");
        }
        assert!(!body_match(policy.clone(), json!({ "other": 1 })), "{name}: absent body key");
    }
}

#[test]
fn exists_false_and_absent_keys() {
    let p = json!({"k": [{"exists": false}]});
    assert!(attr_match(p.clone(), &[("other", "String", "x")]));
    assert!(!attr_match(p.clone(), &[("k", "String", "x")]));
    assert!(body_match(p.clone(), json!({"other": 1})));
    assert!(!body_match(p, json!({"k": null})));
    // OR with a value: absent or equal.
    let p = json!({"k": [{"exists": false}, "x"]});
    assert!(attr_match(p.clone(), &[]));
    assert!(attr_match(p.clone(), &[("k", "String", "x")]));
    assert!(!attr_match(p, &[("k", "String", "y")]));
}

#[test]
fn keys_and_or_combine() {
    let p = json!({"color": ["red"], "size": [{"numeric": [">", 10]}]});
    assert!(attr_match(p.clone(), &[("color", "String", "red"), ("size", "Number", "11")]));
    assert!(!attr_match(p.clone(), &[("color", "String", "red"), ("size", "Number", "9")]));
    assert!(!attr_match(p, &[("color", "String", "red")]));
    let p = json!({"source": ["aws.cloudwatch"], "$or": [{"metric": ["CPU"]}, {"ns": ["EC2"]}]});
    assert!(attr_match(p.clone(), &[("source", "String", "aws.cloudwatch"), ("metric", "String", "CPU")]));
    assert!(attr_match(p.clone(), &[("source", "String", "aws.cloudwatch"), ("ns", "String", "EC2")]));
    assert!(!attr_match(p.clone(), &[("source", "String", "aws.cloudwatch"), ("ns", "String", "S3")]));
    assert!(!attr_match(p, &[("source", "String", "other"), ("metric", "String", "CPU")]));
    let nested = json!({"detail": {"$or": [{"a": [1]}, {"b": {"c": ["x"]}}]}});
    assert!(body_match(nested.clone(), json!({"detail": {"b": {"c": "x"}}})));
    assert!(body_match(nested.clone(), json!({"detail": {"a": 1}})));
    assert!(!body_match(nested, json!({"detail": {"a": 2}})));
}

#[test]
fn body_scope_refuses_non_json_bodies() {
    let p = parse(r#"{"k": [{"exists": false}]}"#, Scope::MessageBody).expect("valid");
    assert!(!p.matches(&MessageView::new(None, b"not json")));
    let empty = parse("{}", Scope::MessageBody).expect("valid");
    assert!(empty.matches(&MessageView::new(None, b"{}")));
}

#[test]
fn typed_amqp_headers_are_attributes() {
    let p = parse(r#"{"n": [{"numeric": [">", 3]}], "tags": ["b"]}"#, Scope::MessageAttributes).expect("valid");
    let mut h = FieldTable::new();
    h.insert("n".into(), FieldValue::I32(4));
    h.insert("tags".into(), FieldValue::Array(vec![FieldValue::text("a"), FieldValue::text("b")]));
    assert!(p.matches(&MessageView::new(Some(&h), b"")));
    h.insert("n".into(), FieldValue::F64(2.5));
    assert!(!p.matches(&MessageView::new(Some(&h), b"")));
    h.insert("n".into(), FieldValue::Bytes(Bytes::from_static(b"4")));
    assert!(!p.matches(&MessageView::new(Some(&h), b"")));
}

#[test]
fn limits_and_texts() {
    let a = Scope::MessageAttributes;
    let six = json!({"a": ["1"], "b": ["1"], "c": ["1"], "d": ["1"], "e": ["1"], "f": ["1"]});
    assert_eq!(err(six, a), "FilterPolicy: Filter policy can not have more than 5 keys");
    let values: Vec<i32> = (0..13).collect();
    let complex = json!({"a": values, "b": values});
    assert_eq!(err(complex, a), "FilterPolicy: Filter policy is too complex");
    let ok: Vec<i32> = (0..10).collect();
    assert!(parse(&json!({"a": ok, "b": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]}).to_string(), a).is_ok());
    // AWS's example: 4 values three levels down, 3 values two levels down: 4x3 x 3x2 = 72.
    let nested = json!({"a": {"b": {"c": [1, 2, 3, 4]}}, "d": {"e": [1, 2, 3]}});
    assert!(parse(&nested.to_string(), Scope::MessageBody).is_ok());
    let nested_big = json!({"a": {"b": {"c": [1, 2, 3, 4, 5, 6, 7]}}, "d": {"e": [1, 2, 3, 4, 5, 6, 7]}});
    assert_eq!(err(nested_big, Scope::MessageBody), "FilterPolicy: Filter policy is too complex");
    assert_eq!(
        err(json!({"a": {"b": ["x"]}}), a),
        "Filter policy scope MessageAttributes does not support nested filter policy"
    );
    assert_eq!(err(json!({"a": []}), a), "FilterPolicy: Empty arrays are not allowed");
    assert_eq!(err(json!({"a": "x"}), a), "FilterPolicy: \"a\" must be an object or an array");
    assert_eq!(err(json!({"a": [[1]]}), a), "FilterPolicy: Match value must be String, number, true, false, or null");
    assert_eq!(err(json!({"a": [{"bogus": 1}]}), a), "FilterPolicy: Unrecognized match type bogus");
    assert_eq!(err(json!({"a": [{"prefix": 1}]}), a), "FilterPolicy: prefix match pattern must be a string");
    assert_eq!(
        err(json!({"a": [{"exists": "yes"}]}), a),
        "FilterPolicy: exists match pattern must be either true or false."
    );
    assert_eq!(
        err(json!({"a": [{"prefix": "x", "suffix": "y"}]}), a),
        "FilterPolicy: Only one key allowed in match expression"
    );
    assert_eq!(err(json!({"a": [{"numeric": ["<>", 1]}]}), a), "FilterPolicy: Unrecognized numeric range operator: <>");
    assert_eq!(err(json!({"a": [{"numeric": ["=", "x"]}]}), a), "FilterPolicy: Value of equals must be numeric");
    assert_eq!(
        err(json!({"a": [{"numeric": ["<", 1, ">", 0]}]}), a),
        "FilterPolicy: Too many elements in numeric expression"
    );
    assert_eq!(err(json!({"a": [{"numeric": [">", 1, ">", 5]}]}), a), "FilterPolicy: Bad numeric range operator: >");
    assert_eq!(err(json!({"a": [{"numeric": [">", 5, "<", 1]}]}), a), "FilterPolicy: Bottom must be less than top");
    assert_eq!(err(json!({"a": [{"numeric": []}]}), a), "FilterPolicy: Invalid member in numeric match: ]");
    assert!(err(json!({"a": [{"numeric": [">", 1e10]}]}), a).contains("out of range"));
    assert!(err(json!({"a": [2e9]}), a).contains("out of range"));
    assert_eq!(
        err(json!({"a": [{"anything-but": {"foo": "x"}}]}), a),
        "FilterPolicy: Unsupported anything-but pattern: foo"
    );
    assert_eq!(err(json!({"a": [{"cidr": "1.2.3.4"}]}), a), "FilterPolicy: Malformed CIDR, one '/' required");
    assert!(err(json!([1]), a).contains("JSON object"));
    assert!(parse("{not json", a).expect_err("bad").0.starts_with("FilterPolicy: failed to parse JSON."));
    let huge = format!("{{\"a\": [\"{}\"]}}", "x".repeat(limits::MAX_POLICY_BYTES));
    assert!(parse(&huge, a).expect_err("too long").0.contains("too long"));
}

fn arb_scalar() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        "[a-c]{0,3}".prop_map(serde_json::Value::from),
        (-20i64..20).prop_map(serde_json::Value::from),
        any::<bool>().prop_map(serde_json::Value::from),
    ]
}

proptest! {
    /// An exact-match policy listing a value always accepts a message carrying it, and
    /// `anything-but` of the same list never does.
    #[test]
    fn exact_and_anything_but_are_complements(values in proptest::collection::vec(arb_scalar(), 1..5), pick in 0usize..5) {
        let v = values[pick % values.len()].clone();
        let body = json!({"k": v}).to_string();
        let view = MessageView::new(None, body.as_bytes());
        let exact = parse(&json!({"k": values}).to_string(), Scope::MessageBody).expect("valid");
        prop_assert!(exact.matches(&view));
        let strings_and_numbers: Vec<_> = values.iter().filter(|x| !x.is_boolean()).cloned().collect();
        if !strings_and_numbers.is_empty() && !v.is_boolean() {
            let but = parse(&json!({"k": [{"anything-but": strings_and_numbers}]}).to_string(), Scope::MessageBody).expect("valid");
            prop_assert!(!but.matches(&view));
        }
    }

    /// A numeric range accepts exactly the numbers inside it.
    #[test]
    fn numeric_ranges_agree_with_arithmetic(lo in -1000i32..1000, width in 1i32..500, x in -2000i32..2000, lo_incl: bool, hi_incl: bool) {
        let hi = lo + width;
        let p = json!({"k": [{"numeric": [if lo_incl { ">=" } else { ">" }, lo, if hi_incl { "<=" } else { "<" }, hi]}]});
        let p = parse(&p.to_string(), Scope::MessageAttributes).expect("valid");
        let h = attrs(&[("k", "Number", &x.to_string())]);
        let want = (if lo_incl { x >= lo } else { x > lo }) && (if hi_incl { x <= hi } else { x < hi });
        prop_assert_eq!(p.matches(&MessageView::new(Some(&h), b"")), want);
    }

    /// Parsing never panics, whatever the text.
    #[test]
    fn parse_never_panics(text in ".{0,64}") {
        let _ = parse(&text, Scope::MessageBody);
        let _ = parse(&text, Scope::MessageAttributes);
    }

    /// Evaluation never panics on arbitrary JSON bodies.
    #[test]
    fn evaluation_never_panics(body in ".{0,64}") {
        let p = parse(r#"{"a": {"b": [{"prefix": "x"}, {"numeric": [">", 1]}, {"exists": false}]}}"#, Scope::MessageBody).expect("valid");
        let _ = p.matches(&MessageView::new(None, body.as_bytes()));
    }
}

mod routing {
    //! A filter-policy exchange in a vhost: policies pick queues, the registered transform
    //! builds each non-raw queue's message, exchange bindings forward the original.

    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use bytes::Bytes;

    use crate::auth::User;
    use crate::exchange::{Binding, Destination, Exchange};
    use crate::filter_policy::subscription::{ARG_FILTER_POLICY, ARG_RAW_DELIVERY, ARG_SUBSCRIPTION_ARN};
    use crate::filter_policy::{DeliveryTransform, Subscription, TopicPublish};
    use crate::memory::MemoryMonitor;
    use crate::message::{FieldTable, FieldValue, Message, Properties};
    use crate::vhost::{ClientContext, ExchangeSpec, QueueSpec, VHost};

    #[derive(Debug)]
    struct Wrap;
    struct WrapOne<'a>(&'a Message, usize);
    impl DeliveryTransform for Wrap {
        fn begin<'a>(&'a self, _topic: &'a Exchange, message: &'a Message) -> Box<dyn TopicPublish + 'a> {
            Box::new(WrapOne(message, 0))
        }
    }
    impl TopicPublish for WrapOne<'_> {
        fn message_for(&mut self, s: &Subscription) -> Option<Message> {
            self.1 += 1;
            if s.raw {
                return None;
            }
            let body = format!("{}|{}", s.arn().unwrap_or("-"), String::from_utf8_lossy(&self.0.body));
            Some(Message::new("", "", Properties::default(), Bytes::from(body)))
        }
    }

    fn args(pairs: &[(&str, FieldValue)]) -> FieldTable {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    fn body_of(v: &VHost, q: &str, ctx: &ClientContext) -> Option<String> {
        let (_, d, _) = v.get(q, true, ctx).expect("get")?;
        Some(String::from_utf8_lossy(&d.message.body).into_owned())
    }

    #[tokio::test]
    async fn policies_pick_queues_and_the_transform_builds_their_messages() {
        let v = VHost::new("/", MemoryMonitor::new(u64::MAX), Arc::new(AtomicU64::new(1)), None);
        let ctx = ClientContext { connection: 1, user: User::superuser("t", &["/"]) };
        let x = |name: &str, kind: &str| ExchangeSpec { name: name.into(), kind: kind.into(), ..Default::default() };
        v.declare_exchange(x("t", "x-sns"), &ctx).expect("declare topic");
        v.declare_exchange(x("fan", "fanout"), &ctx).expect("declare fanout");
        for q in ["red", "raw", "all", "via-fan"] {
            v.declare_queue(QueueSpec { name: q.into(), ..Default::default() }, &ctx).expect("declare queue");
        }
        let policy = FieldValue::text(r#"{"color": ["red"]}"#);
        v.bind(
            "t",
            Destination::Queue("red".into()),
            "",
            args(&[(ARG_FILTER_POLICY, policy), (ARG_SUBSCRIPTION_ARN, FieldValue::text("arn:1"))]),
            &ctx,
        )
        .expect("bind");
        v.bind("t", Destination::Queue("raw".into()), "", args(&[(ARG_RAW_DELIVERY, FieldValue::Bool(true))]), &ctx)
            .expect("bind");
        v.bind("t", Destination::Queue("all".into()), "", FieldTable::new(), &ctx).expect("bind");
        v.bind("t", Destination::Exchange("fan".into()), "", FieldTable::new(), &ctx).expect("bind");
        v.bind("fan", Destination::Queue("via-fan".into()), "", FieldTable::new(), &ctx).expect("bind");
        let bad = args(&[(ARG_FILTER_POLICY, FieldValue::text(r#"{"a": []}"#))]);
        let e = v.bind("t", Destination::Queue("all".into()), "k", bad, &ctx).expect_err("bad policy refused");
        assert_eq!(e.text, "FilterPolicy: Empty arrays are not allowed");
        v.set_delivery_transform(Arc::new(Wrap));

        let publish = |color: &str, body: &'static str| {
            let headers = args(&[("color", FieldValue::text(color))]);
            let props = Properties { headers: Some(headers), ..Default::default() };
            v.publish(Message::new("t", "k", props, Bytes::from_static(body.as_bytes())), &ctx).expect("publish")
        };
        assert!(publish("red", "m1").routed);
        assert_eq!(body_of(&v, "red", &ctx).as_deref(), Some("arn:1|m1"));
        assert_eq!(body_of(&v, "raw", &ctx).as_deref(), Some("m1"));
        assert_eq!(body_of(&v, "all", &ctx).as_deref(), Some("-|m1"));
        assert_eq!(body_of(&v, "via-fan", &ctx).as_deref(), Some("m1"));
        publish("blue", "m2");
        assert_eq!(body_of(&v, "red", &ctx), None);
        assert_eq!(body_of(&v, "raw", &ctx).as_deref(), Some("m2"));

        // Changing a subscription's attributes replaces its binding in place.
        let old = Binding {
            destination: Destination::Queue("raw".into()),
            key: String::new(),
            arguments: args(&[(ARG_RAW_DELIVERY, FieldValue::Bool(true))]),
        };
        let new = Binding { arguments: FieldTable::new(), ..old.clone() };
        assert!(v.replace_binding("t", &old, new).expect("replace"));
        publish("blue", "m3");
        assert_eq!(body_of(&v, "raw", &ctx).as_deref(), Some("-|m3"));
        assert_eq!(
            v.snapshot_definitions().exchanges.iter().find(|e| e.name == "t").map(|e| e.kind.as_str()),
            None,
            "not durable"
        );
    }
}
