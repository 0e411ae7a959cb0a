//! Exchanges (topics): named routers from a published message to queues and
//! other exchanges, by their bindings.
//!
//! The binding list is the source of truth; a per-kind index is rebuilt when it
//! changes (bindings change rarely, messages route constantly).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::error::{CoreError, CoreResult};
use crate::filter_policy::{MessageView, Subscription};
use crate::message::{FieldTable, FieldValue};
use crate::queue::config::values_equal;
use crate::topic::TopicTrie;

/// The routing algorithm of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Routing key equals binding key.
    Direct,
    /// Every binding.
    Fanout,
    /// Binding key is a `*`/`#` pattern over `.`-separated words.
    Topic,
    /// Binding arguments match message headers (`x-match` all/any).
    Headers,
    /// Each binding is a subscription with an SNS-style filter policy (`x-sns`; see
    /// [`crate::filter_policy::subscription`]).
    FilterPolicy,
}

impl ExchangeKind {
    /// Parse the AMQP type name.
    pub fn parse(s: &str) -> Option<ExchangeKind> {
        match s {
            "direct" => Some(ExchangeKind::Direct),
            "fanout" => Some(ExchangeKind::Fanout),
            "topic" => Some(ExchangeKind::Topic),
            "headers" => Some(ExchangeKind::Headers),
            crate::filter_policy::subscription::EXCHANGE_TYPE => Some(ExchangeKind::FilterPolicy),
            _ => None,
        }
    }
    /// The AMQP type name.
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
            ExchangeKind::FilterPolicy => crate::filter_policy::subscription::EXCHANGE_TYPE,
        }
    }
}

/// Where a binding leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    /// A queue by name.
    Queue(String),
    /// Another exchange by name (exchange-to-exchange binding).
    Exchange(String),
}

/// A binding from an exchange to a destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// Where matching messages go.
    pub destination: Destination,
    /// Binding key (pattern for topic exchanges).
    pub key: String,
    /// Binding arguments (`x-match` and header values for headers exchanges).
    pub arguments: FieldTable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum XMatch {
    All,
    Any,
    AllWithX,
    AnyWithX,
}

#[derive(Debug, Default)]
struct Index {
    direct: HashMap<String, Vec<usize>>,
    /// Topic exchanges: binding keys in a trie, values are positions in the binding list.
    topic: TopicTrie,
    /// Compiled subscriptions of a filter-policy exchange.
    subscriptions: Vec<Arc<Subscription>>,
}

#[derive(Debug, Default)]
struct Bindings {
    list: Vec<Binding>,
    index: Index,
}

/// An exchange.
#[derive(Debug)]
pub struct Exchange {
    /// Name (`""` is the default exchange).
    pub name: String,
    /// Routing algorithm.
    pub kind: ExchangeKind,
    /// Survives a restart.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// May not be published to by clients.
    pub internal: bool,
    /// Arguments as declared.
    pub arguments: FieldTable,
    bindings: RwLock<Bindings>,
    /// Counts changes to `bindings`, so a publisher may keep where a routing key went
    /// and reuse it while the count is unchanged (see [`Exchange::generation`]).
    generation: AtomicU64,
    /// Set once the exchange is deleted from its vhost: a kept `Arc` is then stale.
    retired: AtomicBool,
}

impl Exchange {
    /// A new exchange with no bindings.
    pub fn new(
        name: String,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Exchange {
        Exchange {
            name,
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
            bindings: RwLock::new(Bindings::default()),
            generation: AtomicU64::new(0),
            retired: AtomicBool::new(false),
        }
    }

    /// Changes whenever a binding is added, replaced or removed. A route computed after
    /// reading generation `g` is still the route while `generation()` returns `g`.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Taken out of its vhost (deleted): whoever kept this `Arc` must look the name up again.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Marks the exchange deleted (see [`Exchange::is_retired`]).
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Called with the bindings write lock held, after any change to them.
    fn bindings_changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The alternate exchange (`alternate-exchange` argument), if any.
    pub fn alternate(&self) -> Option<&str> {
        self.arguments.get("alternate-exchange").and_then(FieldValue::as_str)
    }

    /// Check that binding arguments make sense for this exchange kind.
    pub fn validate_binding(&self, arguments: &FieldTable) -> CoreResult<()> {
        if self.kind == ExchangeKind::Headers {
            parse_x_match(arguments)?;
        }
        if self.kind == ExchangeKind::FilterPolicy {
            let probe = Binding {
                destination: Destination::Queue(String::new()),
                key: String::new(),
                arguments: arguments.clone(),
            };
            Subscription::from_binding(&probe).map_err(|e| CoreError::precondition(e.0))?;
        }
        Ok(())
    }

    /// Add a binding; false if an identical one exists.
    pub fn bind(&self, binding: Binding) -> bool {
        let mut b = self.bindings.write();
        if b.list.contains(&binding) {
            return false;
        }
        b.list.push(binding);
        let id = b.list.len() - 1;
        // A new binding extends the index; a rebuild (O(bindings)) is left to removals.
        match self.kind {
            ExchangeKind::Topic => {
                let Bindings { list, index } = &mut *b;
                index.topic.insert(&list[id].key, id);
            }
            ExchangeKind::Direct => {
                let key = b.list[id].key.clone();
                b.index.direct.entry(key).or_default().push(id);
            }
            _ => b.index = build_index(&self.name, &b.list, self.kind),
        }
        self.bindings_changed();
        true
    }

    /// Replace the first binding equal to `old` by `new` in one step (a subscription's
    /// attributes changed), keeping its place; false if `old` does not exist.
    pub fn replace_binding(&self, old: &Binding, new: Binding) -> bool {
        let mut b = self.bindings.write();
        let Some(i) = b.list.iter().position(|x| x == old) else { return false };
        b.list[i] = new;
        b.index = build_index(&self.name, &b.list, self.kind);
        self.bindings_changed();
        true
    }

    /// The compiled subscriptions of a filter-policy exchange that accept `message`,
    /// appended to `out` (empty for other kinds).
    pub fn route_subscriptions(&self, message: &MessageView<'_>, out: &mut Vec<Arc<Subscription>>) {
        let b = self.bindings.read();
        out.extend(b.index.subscriptions.iter().filter(|s| s.accepts(message)).cloned());
    }

    /// Remove a binding; false if it did not exist.
    pub fn unbind(&self, destination: &Destination, key: &str, arguments: &FieldTable) -> bool {
        let mut b = self.bindings.write();
        let before = b.list.len();
        b.list.retain(|x| !(x.destination == *destination && x.key == key && x.arguments == *arguments));
        let changed = b.list.len() != before;
        if changed {
            b.index = build_index(&self.name, &b.list, self.kind);
            self.bindings_changed();
        }
        changed
    }

    /// Remove every binding to `destination`; returns how many were removed.
    pub fn unbind_all(&self, destination: &Destination) -> usize {
        let mut b = self.bindings.write();
        let before = b.list.len();
        b.list.retain(|x| x.destination != *destination);
        let removed = before - b.list.len();
        if removed > 0 {
            b.index = build_index(&self.name, &b.list, self.kind);
            self.bindings_changed();
        }
        removed
    }

    /// True if a binding exists.
    pub fn has_binding(&self, destination: &Destination, key: &str, arguments: &FieldTable) -> bool {
        self.bindings
            .read()
            .list
            .iter()
            .any(|x| x.destination == *destination && x.key == key && x.arguments == *arguments)
    }

    /// Number of bindings with this exchange as source.
    pub fn binding_count(&self) -> usize {
        self.bindings.read().list.len()
    }

    /// A copy of the bindings.
    pub fn bindings(&self) -> Vec<Binding> {
        self.bindings.read().list.clone()
    }

    /// Destinations for a message with `routing_key` and `headers`, appended to `out`.
    pub fn route(&self, routing_key: &str, headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        let b = self.bindings.read();
        match self.kind {
            ExchangeKind::Fanout => out.extend(b.list.iter().map(|x| x.destination.clone())),
            ExchangeKind::Direct => {
                if let Some(ids) = b.index.direct.get(routing_key) {
                    out.extend(ids.iter().map(|&i| b.list[i].destination.clone()));
                }
            }
            ExchangeKind::Topic => {
                let mut ids = Vec::new();
                b.index.topic.matches(routing_key, &mut ids);
                out.extend(ids.iter().map(|&i| b.list[i].destination.clone()));
            }
            ExchangeKind::FilterPolicy => {
                let view = MessageView::new(headers, &[]);
                out.extend(b.index.subscriptions.iter().filter(|s| s.accepts(&view)).map(|s| s.destination.clone()));
            }
            ExchangeKind::Headers => {
                let empty = FieldTable::new();
                let headers = headers.unwrap_or(&empty);
                for x in &b.list {
                    if headers_match(&x.arguments, headers) {
                        out.push(x.destination.clone());
                    }
                }
            }
        }
    }
}

fn build_index(name: &str, list: &[Binding], kind: ExchangeKind) -> Index {
    let mut index = Index::default();
    if kind == ExchangeKind::FilterPolicy {
        index.subscriptions = crate::filter_policy::subscription::compile_all(name, list);
    }
    for (i, b) in list.iter().enumerate() {
        match kind {
            ExchangeKind::Direct => index.direct.entry(b.key.clone()).or_default().push(i),
            ExchangeKind::Topic => index.topic.insert(&b.key, i),
            _ => {}
        }
    }
    index
}

/// A value as RabbitMQ prints it in errors (Erlang term syntax for binaries).
fn erlang_term(v: &FieldValue) -> String {
    match v.as_str() {
        Some(s) => format!("<<\"{s}\">>"),
        None => crate::queue::config::render(v),
    }
}

fn parse_x_match(args: &FieldTable) -> CoreResult<XMatch> {
    match args.get("x-match") {
        None => Ok(XMatch::All),
        Some(v) => match v.as_str() {
            Some("all") => Ok(XMatch::All),
            Some("any") => Ok(XMatch::Any),
            Some("all-with-x") => Ok(XMatch::AllWithX),
            Some("any-with-x") => Ok(XMatch::AnyWithX),
            Some(_) => Err(CoreError::precondition(format!(
                "Invalid x-match field value {}; expected all, any, all-with-x, or any-with-x",
                erlang_term(v)
            ))),
            None => Err(CoreError::precondition(format!(
                "Invalid x-match field type {} (value {}); expected longstr",
                crate::queue::config::type_name(v),
                crate::queue::config::render(v)
            ))),
        },
    }
}

/// RabbitMQ's headers-exchange match: binding arguments (other than `x-match`, and
/// other than `x-`-prefixed ones unless `*-with-x`) compared with message headers;
/// a void binding value matches on presence alone.
fn headers_match(binding: &FieldTable, headers: &FieldTable) -> bool {
    let mode = parse_x_match(binding).unwrap_or(XMatch::All);
    let with_x = matches!(mode, XMatch::AllWithX | XMatch::AnyWithX);
    let mut checked = binding.iter().filter(|(k, _)| k.as_str() != "x-match" && (with_x || !k.starts_with("x-")));
    let one = |(k, v): (&String, &FieldValue)| match headers.get(k) {
        None => false,
        Some(h) => *v == FieldValue::Void || values_equal(v, h),
    };
    match mode {
        XMatch::All | XMatch::AllWithX => checked.all(one),
        XMatch::Any | XMatch::AnyWithX => checked.any(one),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(pairs: &[(&str, FieldValue)]) -> FieldTable {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    fn q(n: &str) -> Destination {
        Destination::Queue(n.into())
    }

    fn topic_exchange() -> Exchange {
        Exchange::new("amq.topic".into(), ExchangeKind::Topic, true, false, false, FieldTable::new())
    }

    fn bind(ex: &Exchange, dest: &str, key: &str) -> bool {
        ex.bind(Binding { destination: q(dest), key: key.into(), arguments: FieldTable::new() })
    }

    #[test]
    fn ten_thousand_device_bindings_route_by_trie_and_survive_unbinding() {
        let ex = topic_exchange();
        for i in 0..10_000 {
            assert!(bind(&ex, &format!("dev{i}"), &format!("devices.{i}.cmd")));
        }
        assert!(bind(&ex, "audit", "devices.*.cmd"));
        assert!(bind(&ex, "all", "#"));
        assert!(!bind(&ex, "all", "#"), "an identical binding is refused");
        let route = |key: &str| {
            let mut out = Vec::new();
            ex.route(key, None, &mut out);
            out
        };
        // In binding order, each once.
        assert_eq!(route("devices.4242.cmd"), [q("dev4242"), q("audit"), q("all")]);
        assert_eq!(route("devices.4242"), [q("all")]);
        // Removing bindings renumbers the list; the rebuilt trie follows.
        assert!(ex.unbind(&q("dev0"), "devices.0.cmd", &FieldTable::new()));
        assert_eq!(ex.unbind_all(&q("audit")), 1);
        assert_eq!(route("devices.4242.cmd"), [q("dev4242"), q("all")]);
        assert_eq!(route("devices.0.cmd"), [q("all")]);
        assert!(bind(&ex, "dev0", "devices.0.cmd"));
        assert_eq!(route("devices.0.cmd"), [q("all"), q("dev0")]);
    }

    /// `cargo test -p switchyard --release --lib exchange::tests::cost -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn cost_of_routing_among_ten_thousand_bindings() {
        let ex = topic_exchange();
        let start = std::time::Instant::now();
        for i in 0..10_000 {
            bind(&ex, &format!("dev{i}"), &format!("devices.{i}.cmd"));
        }
        println!("10,000 binds: {:?}", start.elapsed());
        let start = std::time::Instant::now();
        let mut out = Vec::new();
        for i in 0..100_000 {
            out.clear();
            ex.route(&format!("devices.{}.cmd", i % 10_000), None, &mut out);
        }
        println!("100,000 routes: {:?} ({:.0} ns each)", start.elapsed(), start.elapsed().as_nanos() as f64 / 1e5);
        // What the index did before the trie: every pattern tried against every key.
        let patterns: Vec<_> =
            (0..10_000).map(|i| crate::topic::TopicPattern::new(&format!("devices.{i}.cmd"))).collect();
        let start = std::time::Instant::now();
        let mut hits = 0;
        for i in 0..1_000 {
            let key = format!("devices.{}.cmd", i % 10_000);
            hits += patterns.iter().filter(|p| p.matches(&key)).count();
        }
        assert_eq!(hits, 1_000);
        println!("1,000 linear routes: {:?} ({:.0} ns each)", start.elapsed(), start.elapsed().as_nanos() as f64 / 1e3);
    }

    #[test]
    fn direct_fanout_topic() {
        let d = Exchange::new("d".into(), ExchangeKind::Direct, false, false, false, FieldTable::new());
        d.bind(Binding { destination: q("a"), key: "k".into(), arguments: FieldTable::new() });
        d.bind(Binding { destination: q("b"), key: "other".into(), arguments: FieldTable::new() });
        let mut out = Vec::new();
        d.route("k", None, &mut out);
        assert_eq!(out, vec![q("a")]);

        let f = Exchange::new("f".into(), ExchangeKind::Fanout, false, false, false, FieldTable::new());
        f.bind(Binding { destination: q("a"), key: "x".into(), arguments: FieldTable::new() });
        f.bind(Binding { destination: q("b"), key: "y".into(), arguments: FieldTable::new() });
        let mut out = Vec::new();
        f.route("zzz", None, &mut out);
        assert_eq!(out.len(), 2);

        let tp = Exchange::new("t".into(), ExchangeKind::Topic, false, false, false, FieldTable::new());
        tp.bind(Binding { destination: q("a"), key: "a.*".into(), arguments: FieldTable::new() });
        tp.bind(Binding { destination: q("b"), key: "#".into(), arguments: FieldTable::new() });
        let mut out = Vec::new();
        tp.route("a.b", None, &mut out);
        assert_eq!(out, vec![q("a"), q("b")]);
        assert!(tp.unbind(&q("b"), "#", &FieldTable::new()));
        let mut out = Vec::new();
        tp.route("c", None, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn headers_all_any_void_and_x() {
        let h = t(&[("a", FieldValue::I32(1)), ("b", FieldValue::text("x")), ("x-k", FieldValue::text("v"))]);
        assert!(headers_match(&t(&[("a", FieldValue::I64(1)), ("b", FieldValue::text("x"))]), &h));
        assert!(!headers_match(&t(&[("a", FieldValue::I64(1)), ("c", FieldValue::text("x"))]), &h));
        assert!(headers_match(
            &t(&[("x-match", FieldValue::text("any")), ("a", FieldValue::I64(2)), ("b", FieldValue::text("x"))]),
            &h
        ));
        assert!(headers_match(&t(&[("a", FieldValue::Void)]), &h));
        // x- arguments are ignored unless *-with-x.
        assert!(headers_match(&t(&[("x-k", FieldValue::text("nope"))]), &h));
        assert!(!headers_match(
            &t(&[("x-match", FieldValue::text("all-with-x")), ("x-k", FieldValue::text("nope"))]),
            &h
        ));
        assert!(headers_match(&t(&[("x-match", FieldValue::text("any-with-x")), ("x-k", FieldValue::text("v"))]), &h));
        assert!(parse_x_match(&t(&[("x-match", FieldValue::text("bogus"))])).is_err());
    }
}
