//! STOMP destinations as RabbitMQ's STOMP plugin names them, parsed into what
//! they mean on the core, and the reverse mapping for MESSAGE frames.
//!
//! | destination | SEND | SUBSCRIBE |
//! |---|---|---|
//! | `/queue/<q>` | declare `q` (durable), publish via the default exchange | declare `q`, consume it |
//! | `/amq/queue/<q>` | publish via the default exchange, no declare | consume existing `q` |
//! | `/topic/<key>` | publish to `amq.topic` with `key` | private queue bound to `amq.topic` with `key` |
//! | `/exchange/<x>[/<key>]` | publish to `x` with `key` | private queue bound to `x` with `key` |
//! | `/temp-queue/<n>` | connection-owned reply queue `n` | the same queue |
//! | `/reply-queue/<q>` | publish via the default exchange to `q` | consume `q` |
//!
//! Names may contain `/` written as `%2F` (except in `/reply-queue/`, whose
//! rest is taken verbatim, as in RabbitMQ).

/// Prefixes, in the order RabbitMQ lists them in its error text.
pub const PREFIXES: &[&str] = &["/exchange/", "/topic/", "/queue/", "/amq/queue/", "/reply-queue/", "/temp-queue/"];

/// A parsed destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `/queue/<name>`.
    Queue(String),
    /// `/amq/queue/<name>`.
    AmqQueue(String),
    /// `/topic/<routing key>`.
    Topic(String),
    /// `/exchange/<name>[/<routing key or pattern>]`.
    Exchange {
        /// Exchange name (never empty: the default exchange cannot be named this way).
        name: String,
        /// Routing key (SEND) or binding pattern (SUBSCRIBE).
        key: Option<String>,
    },
    /// `/temp-queue/<name>`: a name local to the connection.
    TempQueue(String),
    /// `/reply-queue/<queue name>`.
    ReplyQueue(String),
}

/// Why a destination header was refused: `(message header, detail)` for the ERROR frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// No known prefix.
    #[error("'{0}' is not a valid destination")]
    Unknown(String),
    /// A known prefix with a malformed rest.
    #[error("'{content}' is not a valid {kind} destination")]
    Invalid {
        /// The destination type (`queue`, `topic`, ...).
        kind: &'static str,
        /// The part after the prefix.
        content: String,
    },
}

impl DestinationError {
    /// The ERROR frame's `message` header and body, worded as RabbitMQ words them.
    pub fn wire(&self) -> (&'static str, String) {
        match self {
            DestinationError::Unknown(d) => (
                "Unknown destination",
                format!("'{d}' is not a valid destination.\nValid destination types are: {}.\n", PREFIXES.join(", ")),
            ),
            DestinationError::Invalid { kind, content } => {
                ("Invalid destination", format!("'{content}' is not a valid {kind} destination\n"))
            }
        }
    }
}

/// Parse a `destination` header.
pub fn parse(dest: &str) -> Result<Destination, DestinationError> {
    if let Some(rest) = dest.strip_prefix("/reply-queue/") {
        if rest.is_empty() {
            return Err(DestinationError::Invalid { kind: "reply-queue", content: rest.to_string() });
        }
        return Ok(Destination::ReplyQueue(rest.to_string()));
    }
    if let Some(rest) = dest.strip_prefix("/exchange/") {
        let parts: Vec<&str> = rest.split('/').collect();
        let invalid = || DestinationError::Invalid { kind: "exchange", content: rest.to_string() };
        return match parts.as_slice() {
            [name] if !name.is_empty() => Ok(Destination::Exchange { name: unescape(name), key: None }),
            [name, key] if !name.is_empty() => {
                Ok(Destination::Exchange { name: unescape(name), key: Some(unescape(key)) })
            }
            _ => Err(invalid()),
        };
    }
    type Make = fn(String) -> Destination;
    let simple: [(&str, &'static str, Make); 4] = [
        ("/queue/", "queue", Destination::Queue),
        ("/amq/queue/", "amqqueue", Destination::AmqQueue),
        ("/topic/", "topic", Destination::Topic),
        ("/temp-queue/", "temp_queue", Destination::TempQueue),
    ];
    for (prefix, kind, make) in simple {
        if let Some(rest) = dest.strip_prefix(prefix) {
            if rest.is_empty() || rest.contains('/') {
                return Err(DestinationError::Invalid { kind, content: rest.to_string() });
            }
            return Ok(make(unescape(rest)));
        }
    }
    Err(DestinationError::Unknown(dest.to_string()))
}

/// The destination a MESSAGE reports for a message published to `exchange` with `routing_key`.
pub fn format(exchange: &str, routing_key: &str) -> String {
    match (exchange, routing_key) {
        ("", rk) => format!("/queue/{}", escape(rk)),
        ("amq.topic", rk) => format!("/topic/{}", escape(rk)),
        (x, "") => format!("/exchange/{}", escape(x)),
        (x, rk) => format!("/exchange/{}/{}", escape(x), escape(rk)),
    }
}

fn unescape(s: &str) -> String {
    s.replace("%2F", "/")
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '/' => out.push_str("%2F"),
            '%' => out.push_str("%25"),
            c if (c as u32) < 32 => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        assert_eq!(parse("/queue/a"), Ok(Destination::Queue("a".into())));
        assert_eq!(parse("/queue/a%2Fb"), Ok(Destination::Queue("a/b".into())));
        assert_eq!(parse("/amq/queue/a"), Ok(Destination::AmqQueue("a".into())));
        assert_eq!(parse("/topic/a.b.#"), Ok(Destination::Topic("a.b.#".into())));
        assert_eq!(parse("/exchange/x"), Ok(Destination::Exchange { name: "x".into(), key: None }));
        assert_eq!(parse("/exchange/x/k.*"), Ok(Destination::Exchange { name: "x".into(), key: Some("k.*".into()) }));
        assert_eq!(parse("/temp-queue/r"), Ok(Destination::TempQueue("r".into())));
        assert_eq!(parse("/reply-queue/amq.gen-1/x"), Ok(Destination::ReplyQueue("amq.gen-1/x".into())));
    }

    #[test]
    fn refuses_bad_ones() {
        assert!(matches!(parse("/nope/a"), Err(DestinationError::Unknown(_))));
        assert!(matches!(parse("queue/a"), Err(DestinationError::Unknown(_))));
        assert!(matches!(parse("/queue/"), Err(DestinationError::Invalid { kind: "queue", .. })));
        assert!(matches!(parse("/queue/a/b"), Err(DestinationError::Invalid { .. })));
        assert!(matches!(parse("/exchange//k"), Err(DestinationError::Invalid { kind: "exchange", .. })));
        assert!(matches!(parse("/exchange/x/k/z"), Err(DestinationError::Invalid { .. })));
        let (msg, detail) = parse("/nope").expect_err("unknown").wire();
        assert_eq!(msg, "Unknown destination");
        assert!(detail.contains("/temp-queue/"), "{detail}");
    }

    #[test]
    fn formats_like_rabbitmq() {
        assert_eq!(format("", "q"), "/queue/q");
        assert_eq!(format("", "a/b"), "/queue/a%2Fb");
        assert_eq!(format("amq.topic", "a.b"), "/topic/a.b");
        assert_eq!(format("x", ""), "/exchange/x");
        assert_eq!(format("x", "k"), "/exchange/x/k");
        for d in ["/queue/a%2Fb", "/topic/x.y", "/exchange/e/k"] {
            let parsed = parse(d).expect("valid");
            let (x, k) = match parsed {
                Destination::Queue(q) => (String::new(), q),
                Destination::Topic(k) => ("amq.topic".into(), k),
                Destination::Exchange { name, key } => (name, key.unwrap_or_default()),
                other => panic!("{other:?}"),
            };
            assert_eq!(format(&x, &k), d);
        }
    }
}
