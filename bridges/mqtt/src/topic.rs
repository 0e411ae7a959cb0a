//! MQTT topic names and filters: validation, matching, shared-subscription
//! syntax, and the mapping onto AMQP routing keys of a topic exchange.
//!
//! The mapping swaps the two separators: MQTT `/` becomes AMQP `.` and MQTT `.`
//! becomes AMQP `/`; `+` becomes `*` and `#` stays `#`. So `a/b/c` ⇄ `a.b.c`
//! (RabbitMQ's mapping) and a dot inside a level survives the round trip:
//! Sparkplug's `spBv1.0/group/NDATA/node` is the routing key
//! `spBv1/0.group.NDATA.node` and comes back unchanged. RabbitMQ leaves the dot
//! alone instead, which makes it a level separator for AMQP *and* for MQTT
//! subscribers (`v1.2/x` is delivered as `v1/2/x`, and `a/+` misses `a/b.c`);
//! swapping keeps MQTT semantics exact and is a bijection.

/// Why a topic name or filter is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Empty.
    #[error("empty topic")]
    Empty,
    /// A wildcard in a topic name, or a misplaced wildcard in a filter.
    #[error("invalid wildcard")]
    Wildcard,
    /// A malformed `$share/<group>/<filter>`.
    #[error("invalid shared subscription")]
    Shared,
}

/// Check a topic name (PUBLISH, will): non-empty, no wildcards.
pub fn validate_name(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.contains(['+', '#']) {
        return Err(TopicError::Wildcard);
    }
    Ok(())
}

/// Check a topic filter: `+` only as a whole level, `#` only as the whole last level.
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        match *level {
            "+" => {}
            "#" if i == levels.len() - 1 => {}
            l if l.contains(['+', '#']) => return Err(TopicError::Wildcard),
            _ => {}
        }
    }
    Ok(())
}

/// True if `filter` contains a wildcard.
pub fn has_wildcard(filter: &str) -> bool {
    filter.contains(['+', '#'])
}

/// A `$share/<group>/<filter>` subscription, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shared<'a> {
    /// The share name.
    pub group: &'a str,
    /// The topic filter.
    pub filter: &'a str,
}

/// Split a shared subscription; `Ok(None)` for an ordinary filter.
pub fn parse_shared(filter: &str) -> Result<Option<Shared<'_>>, TopicError> {
    let Some(rest) = filter.strip_prefix("$share/") else {
        if filter == "$share" {
            return Err(TopicError::Shared);
        }
        return Ok(None);
    };
    let Some((group, filter)) = rest.split_once('/') else { return Err(TopicError::Shared) };
    if group.is_empty() || group.contains(['+', '#']) || filter.is_empty() {
        return Err(TopicError::Shared);
    }
    validate_filter(filter)?;
    Ok(Some(Shared { group, filter }))
}

/// True if topic `name` matches `filter` by MQTT's rules, including MQTT-4.7.2-1:
/// names starting with `$` are not matched by a filter starting with a wildcard.
pub fn matches(filter: &str, name: &str) -> bool {
    if !filter.bytes().any(|b| b == b'+' || b == b'#') {
        // No wildcard: the levels match exactly when the strings do.
        return filter == name;
    }
    if name.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut n = name.split('/');
    loop {
        match (f.next(), n.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Copy `s`, replacing each ASCII byte for which `map` returns a char. The bytes
/// mapped are ASCII, so every split falls on a char boundary; runs of unmapped bytes
/// are copied whole, and the result is allocated once.
fn map_ascii(s: &str, map: impl Fn(u8) -> Option<char>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        if let Some(c) = map(b) {
            out.push_str(&s[start..i]);
            out.push(c);
            start = i + 1;
        }
    }
    out.push_str(&s[start..]);
    out
}

/// Swap `/` and `.` and map `+` to `*`: an MQTT topic or filter as an AMQP routing
/// or binding key.
pub fn to_routing_key(topic: &str) -> String {
    map_ascii(topic, |b| match b {
        b'/' => Some('.'),
        b'.' => Some('/'),
        b'+' => Some('*'),
        _ => None,
    })
}

/// The inverse of [`to_routing_key`] for routing keys: swap `.` and `/`. A `*` in a
/// routing key is a literal character and stays one.
pub fn from_routing_key(key: &str) -> String {
    map_ascii(key, |b| match b {
        b'.' => Some('/'),
        b'/' => Some('.'),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_filters_validate() {
        assert!(validate_name("a/b").is_ok());
        assert!(validate_name("/").is_ok());
        assert_eq!(validate_name(""), Err(TopicError::Empty));
        assert_eq!(validate_name("a/+"), Err(TopicError::Wildcard));
        assert_eq!(validate_name("a/#"), Err(TopicError::Wildcard));
        for ok in ["#", "+", "a/#", "+/+", "a/+/b", "/+", "a//b", "+/#"] {
            assert!(validate_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["a#", "a/#/b", "a+", "+a/b", "#/a", ""] {
            assert!(validate_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matching_follows_the_spec() {
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(matches("a/+", "a/b"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(matches("a/+", "a/"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "a/b"));
        assert!(matches("+/+", "/x"));
        assert!(matches("+", "a.b"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(matches("a/+/c", "a/b.b/c"));
    }

    #[test]
    fn shared_subscriptions_parse() {
        assert_eq!(parse_shared("a/b"), Ok(None));
        assert_eq!(parse_shared("$share/g/a/+"), Ok(Some(Shared { group: "g", filter: "a/+" })));
        assert_eq!(parse_shared("$share/g"), Err(TopicError::Shared));
        assert_eq!(parse_shared("$share//a"), Err(TopicError::Shared));
        assert_eq!(parse_shared("$share/g+/a"), Err(TopicError::Shared));
        assert_eq!(parse_shared("$share/g/a#"), Err(TopicError::Wildcard));
    }

    #[test]
    fn routing_keys_swap_separators() {
        assert_eq!(to_routing_key("a/b/c"), "a.b.c");
        assert_eq!(to_routing_key("a/+/#"), "a.*.#");
        assert_eq!(to_routing_key("spBv1.0/g/NDATA/n"), "spBv1/0.g.NDATA.n");
        assert_eq!(from_routing_key("spBv1/0.g.NDATA.n"), "spBv1.0/g/NDATA/n");
        assert_eq!(from_routing_key("a.b.c"), "a/b/c");
        assert_eq!(to_routing_key("/a/"), ".a.");
        assert_eq!(to_routing_key("ü/é.+"), "ü.é/*");
        assert_eq!(from_routing_key("ü.é/*"), "ü/é.*");
        assert_eq!(to_routing_key(""), "");
    }

    proptest::proptest! {
        #[test]
        fn routing_key_mapping_round_trips(t in "[a-zé./$ ]{0,20}") {
            proptest::prop_assert_eq!(from_routing_key(&to_routing_key(&t)), t);
        }
    }
}
