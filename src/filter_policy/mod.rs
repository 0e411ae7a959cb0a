//! SNS-style filter policies: parse and validate once, evaluate fast.
//!
//! A filter policy is a JSON object that decides whether a message reaches one subscription
//! (binding) of a filter-policy exchange (`x-sns`, see [`subscription`]). Grammar, as Amazon SNS
//! documents it:
//!
//! - **Scopes**: [`Scope::MessageAttributes`] (flat: keys are attribute names) or
//!   [`Scope::MessageBody`] (the body is JSON; keys nest into objects, and arrays on the way are
//!   searched element by element).
//! - **Logic**: keys are ANDed; the values in one key's array are ORed; `"$or": [{..}, {..}]`
//!   ORs whole sub-policies at any level.
//! - **Operators**: exact strings, numbers, `true`/`false`/`null`; `prefix`, `suffix`,
//!   `equals-ignore-case`; `anything-but` (a value, a list, or `{"prefix"|"suffix"|
//!   "equals-ignore-case": ..}`); `numeric` (`=`, and ranges `>`/`>=` optionally followed by
//!   `<`/`<=`); `exists`; `cidr` (IPv4/IPv6).
//! - **Arrays in messages**: a `String.Array` attribute, or a JSON array in the body, matches when
//!   one of its elements matches (`anything-but`: when none of them is excluded).
//! - **Limits** ([`limits`]): ≤ 5 top-level keys, ≤ 150 value combinations, numbers within
//!   ±10^9, a policy ≤ 256 KiB; the error texts are SNS's.
//!
//! [`parse`] compiles a policy into a small tree ([`FilterPolicy`]); [`view::MessageView`] reads
//! a message's attributes (and, lazily, its JSON body) once per publish, so evaluating one
//! message against many subscriptions parses nothing twice.

pub mod cidr;
pub mod condition;
pub mod parse;
pub mod subscription;
pub mod view;

#[cfg(test)]
mod bench;
#[cfg(test)]
mod tests;

pub use condition::Condition;
pub use parse::parse;
pub use subscription::{DeliveryTransform, Subscription, TopicPublish};
pub use view::{MessageView, Value};

/// AWS's limits on filter policies (strict mode).
pub mod limits {
    /// Most keys at the top level of a policy.
    pub const MAX_KEYS: usize = 5;
    /// Most value combinations (product of array lengths, weighted by nesting depth).
    pub const MAX_COMBINATIONS: u64 = 150;
    /// Largest absolute number in a policy.
    pub const MAX_NUMBER: f64 = 1e9;
    /// Longest policy text, in bytes.
    pub const MAX_POLICY_BYTES: usize = 256 * 1024;
}

/// Which part of a message a policy looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scope {
    /// The message attributes (headers); flat keys.
    #[default]
    MessageAttributes,
    /// The JSON body; nested keys.
    MessageBody,
}

impl Scope {
    /// Parses SNS's `FilterPolicyScope` value.
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "MessageAttributes" => Some(Scope::MessageAttributes),
            "MessageBody" => Some(Scope::MessageBody),
            _ => None,
        }
    }

    /// SNS's name for the scope.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::MessageAttributes => "MessageAttributes",
            Scope::MessageBody => "MessageBody",
        }
    }
}

/// Why a policy was refused. The text is SNS's, after the `Invalid parameter: ` prefix
/// (e.g. `FilterPolicy: Filter policy can not have more than 5 keys`); front-ends add the
/// prefix their action uses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

impl PolicyError {
    /// An error about the policy's content (`FilterPolicy: <text>`).
    pub(crate) fn policy(text: impl std::fmt::Display) -> PolicyError {
        PolicyError(format!("FilterPolicy: {text}"))
    }
}

/// A policy path (one key, or nested keys in the body scope) and its ORed conditions.
#[derive(Debug, Clone, PartialEq)]
pub struct Leaf {
    /// Keys from the top of the message down to the value.
    pub path: Vec<Box<str>>,
    /// At least one must match.
    pub conditions: Vec<Condition>,
}

/// One level of a compiled policy: every leaf and every `$or` group must match.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Node {
    /// ANDed leaves.
    pub leaves: Vec<Leaf>,
    /// ANDed groups; within a group, one alternative must match.
    pub any_of: Vec<Vec<Node>>,
}

/// A compiled, validated filter policy.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterPolicy {
    scope: Scope,
    root: Node,
}

impl FilterPolicy {
    /// The scope the policy applies to.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The compiled tree.
    pub fn root(&self) -> &Node {
        &self.root
    }

    /// True when `message` passes the policy.
    pub fn matches(&self, message: &MessageView<'_>) -> bool {
        match self.scope {
            Scope::MessageAttributes => eval_node(&self.root, &|path: &[Box<str>], out: &mut Vec<Value<'_>>| {
                if let [key] = path { message.attribute(key, out) } else { false }
            }),
            Scope::MessageBody => match message.body() {
                Some(body) => eval_node(&self.root, &|path: &[Box<str>], out: &mut Vec<Value<'_>>| {
                    view::body_values(body, path, out)
                }),
                None => false,
            },
        }
    }
}

/// Evaluates a node; `lookup(path, out)` pushes the message's values at `path` and returns
/// whether the path exists.
fn eval_node<'m, F>(node: &Node, lookup: &F) -> bool
where
    F: Fn(&[Box<str>], &mut Vec<Value<'m>>) -> bool,
{
    let mut values = Vec::new();
    for leaf in &node.leaves {
        values.clear();
        let present = lookup(&leaf.path, &mut values);
        if !condition::any_matches(&leaf.conditions, present, &values) {
            return false;
        }
    }
    node.any_of.iter().all(|group| group.iter().any(|alt| eval_node(alt, lookup)))
}
