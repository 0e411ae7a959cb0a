//! One compiled match condition and how it tests a message's values.

use crate::filter_policy::cidr::Cidr;
use crate::filter_policy::view::Value;

/// A literal in an exact or `anything-but` match.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A string.
    Str(Box<str>),
    /// A number.
    Num(f64),
    /// `true`/`false`.
    Bool(bool),
    /// `null`.
    Null,
}

/// One bound of a numeric range: the number and whether it is included.
pub type Bound = Option<(f64, bool)>;

/// A compiled match condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Equal to the literal (strings exactly, numbers numerically).
    Exact(Literal),
    /// A string starting with this.
    Prefix(Box<str>),
    /// A string ending with this.
    Suffix(Box<str>),
    /// A string equal to this, ignoring case (stored lowercased).
    EqualsIgnoreCase(Box<str>),
    /// None of the values is one of these.
    AnythingBut(Vec<Literal>),
    /// No string value starts with this.
    AnythingButPrefix(Box<str>),
    /// No string value ends with this.
    AnythingButSuffix(Box<str>),
    /// No string value equals one of these, ignoring case (stored lowercased).
    AnythingButIgnoreCase(Vec<Box<str>>),
    /// A number within the bounds.
    Numeric {
        /// Lower bound.
        low: Bound,
        /// Upper bound.
        high: Bound,
    },
    /// The key is (true) or is not (false) present.
    Exists(bool),
    /// A string holding an IP address inside the network.
    Cidr(Cidr),
}

/// Numbers compare at SNS's precision (the policy grammar allows 5 decimals; a millionth
/// of slack absorbs the binary floating-point error of decimal inputs).
const EPSILON: f64 = 1e-6;

fn num_eq(a: f64, b: f64) -> bool {
    (a - b).abs() < EPSILON
}

fn literal_eq(lit: &Literal, v: &Value<'_>) -> bool {
    match (lit, v) {
        (Literal::Str(a), Value::Str(b)) => &**a == *b,
        (Literal::Num(a), Value::Num(b)) => num_eq(*a, *b),
        (Literal::Bool(a), Value::Bool(b)) => a == b,
        (Literal::Null, Value::Null) => true,
        _ => false,
    }
}

fn ignore_case_eq(lower: &str, s: &str) -> bool {
    s.chars().flat_map(char::to_lowercase).eq(lower.chars())
}

impl Condition {
    /// True when one value satisfies this (positive) condition.
    fn matches_one(&self, v: &Value<'_>) -> bool {
        match self {
            Condition::Exact(lit) => literal_eq(lit, v),
            Condition::Prefix(p) => matches!(v, Value::Str(s) if s.starts_with(&**p)),
            Condition::Suffix(p) => matches!(v, Value::Str(s) if s.ends_with(&**p)),
            Condition::EqualsIgnoreCase(l) => matches!(v, Value::Str(s) if ignore_case_eq(l, s)),
            Condition::Numeric { low, high } => match v {
                Value::Num(n) => {
                    let above = match low {
                        None => true,
                        Some((b, true)) => *n >= *b || num_eq(*n, *b),
                        Some((b, false)) => *n > *b && !num_eq(*n, *b),
                    };
                    let below = match high {
                        None => true,
                        Some((b, true)) => *n <= *b || num_eq(*n, *b),
                        Some((b, false)) => *n < *b && !num_eq(*n, *b),
                    };
                    above && below
                }
                _ => false,
            },
            Condition::Cidr(net) => matches!(v, Value::Str(s) if net.contains_text(s)),
            // Handled on the whole value set.
            Condition::Exists(_)
            | Condition::AnythingBut(_)
            | Condition::AnythingButPrefix(_)
            | Condition::AnythingButSuffix(_)
            | Condition::AnythingButIgnoreCase(_) => false,
        }
    }

    /// True when the key's values (`present` tells whether the key exists) satisfy this.
    pub fn matches(&self, present: bool, values: &[Value<'_>]) -> bool {
        match self {
            Condition::Exists(want) => *want == present,
            _ if !present => false,
            Condition::AnythingBut(list) => {
                !values.is_empty() && values.iter().all(|v| !list.iter().any(|l| literal_eq(l, v)))
            }
            Condition::AnythingButPrefix(p) => {
                !values.is_empty() && values.iter().all(|v| matches!(v, Value::Str(s) if !s.starts_with(&**p)))
            }
            Condition::AnythingButSuffix(p) => {
                !values.is_empty() && values.iter().all(|v| matches!(v, Value::Str(s) if !s.ends_with(&**p)))
            }
            Condition::AnythingButIgnoreCase(list) => {
                !values.is_empty()
                    && values.iter().all(|v| matches!(v, Value::Str(s) if !list.iter().any(|l| ignore_case_eq(l, s))))
            }
            positive => values.iter().any(|v| positive.matches_one(v)),
        }
    }
}

/// True when at least one of `conditions` is satisfied.
pub fn any_matches(conditions: &[Condition], present: bool, values: &[Value<'_>]) -> bool {
    conditions.iter().any(|c| c.matches(present, values))
}
