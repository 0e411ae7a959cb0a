//! Parsing and validation: a policy's JSON text to a compiled [`FilterPolicy`], refusing what
//! SNS refuses with SNS's texts.

use serde_json::{Map, Value as Json};

use crate::filter_policy::cidr::Cidr;
use crate::filter_policy::condition::{Bound, Condition, Literal};
use crate::filter_policy::{FilterPolicy, Leaf, Node, PolicyError, Scope, limits};

/// Parses, validates and compiles a policy for `scope`.
pub fn parse(text: &str, scope: Scope) -> Result<FilterPolicy, PolicyError> {
    if text.len() > limits::MAX_POLICY_BYTES {
        return Err(PolicyError::policy(format!(
            "Filter policy is too long: {} bytes; the limit is {} bytes",
            text.len(),
            limits::MAX_POLICY_BYTES
        )));
    }
    let json: Json =
        serde_json::from_str(text).map_err(|e| PolicyError::policy(format!("failed to parse JSON. {e}")))?;
    let Json::Object(top) = &json else {
        return Err(PolicyError::policy("Filter policy must be a JSON object"));
    };
    if top.len() > limits::MAX_KEYS {
        return Err(PolicyError::policy("Filter policy can not have more than 5 keys"));
    }
    let combinations = combinations(top, 1, scope)?;
    if combinations > limits::MAX_COMBINATIONS {
        return Err(PolicyError::policy("Filter policy is too complex"));
    }
    let root = compile_node(top, &[])?;
    Ok(FilterPolicy { scope, root })
}

/// SNS's complexity measure: the product over value arrays of (array length × nesting depth),
/// where the alternatives of an `$or` add up.
fn combinations(obj: &Map<String, Json>, depth: u64, scope: Scope) -> Result<u64, PolicyError> {
    let mut total: u64 = 1;
    for (key, v) in obj {
        let factor = match v {
            Json::Array(items) if key == "$or" => {
                let mut sum: u64 = 0;
                for alt in items {
                    match alt {
                        Json::Object(m) => sum = sum.saturating_add(combinations(m, depth, scope)?),
                        _ => return Err(PolicyError::policy(format!("\"{key}\" must be an object or an array"))),
                    }
                }
                sum
            }
            Json::Array(items) => (items.len() as u64).saturating_mul(depth),
            Json::Object(m) => {
                if scope == Scope::MessageAttributes {
                    return Err(PolicyError(
                        "Filter policy scope MessageAttributes does not support nested filter policy".into(),
                    ));
                }
                combinations(m, depth + 1, scope)?
            }
            _ => return Err(PolicyError::policy(format!("\"{key}\" must be an object or an array"))),
        };
        total = total.saturating_mul(factor);
    }
    Ok(total)
}

fn compile_node(obj: &Map<String, Json>, prefix: &[Box<str>]) -> Result<Node, PolicyError> {
    let mut node = Node::default();
    for (key, v) in obj {
        match v {
            Json::Array(items) if key == "$or" => {
                if items.len() < 2 {
                    return Err(PolicyError::policy("$or must have at least 2 alternatives"));
                }
                let mut group = Vec::with_capacity(items.len());
                for alt in items {
                    if let Json::Object(m) = alt {
                        group.push(compile_node(m, prefix)?);
                    }
                }
                node.any_of.push(group);
            }
            Json::Array(items) => {
                if items.is_empty() {
                    return Err(PolicyError::policy("Empty arrays are not allowed"));
                }
                let mut path = prefix.to_vec();
                path.push(key.as_str().into());
                let conditions = items.iter().map(compile_condition).collect::<Result<Vec<_>, _>>()?;
                node.leaves.push(Leaf { path, conditions });
            }
            Json::Object(m) => {
                let mut path = prefix.to_vec();
                path.push(key.as_str().into());
                let sub = compile_node(m, &path)?;
                node.leaves.extend(sub.leaves);
                node.any_of.extend(sub.any_of);
            }
            _ => return Err(PolicyError::policy(format!("\"{key}\" must be an object or an array"))),
        }
    }
    Ok(node)
}

fn number(v: &Json) -> Option<f64> {
    v.as_f64()
}

fn check_range(n: f64) -> Result<f64, PolicyError> {
    if n.abs() > limits::MAX_NUMBER {
        return Err(PolicyError::policy(format!(
            "Numeric value {n} is out of range; numbers must be between -1000000000 and 1000000000"
        )));
    }
    Ok(n)
}

fn literal(v: &Json) -> Result<Literal, PolicyError> {
    match v {
        Json::String(s) => Ok(Literal::Str(s.as_str().into())),
        Json::Number(_) => Ok(Literal::Num(check_range(number(v).unwrap_or(f64::NAN))?)),
        Json::Bool(b) => Ok(Literal::Bool(*b)),
        Json::Null => Ok(Literal::Null),
        _ => Err(PolicyError::policy("Match value must be String, number, true, false, or null")),
    }
}

fn string_of<'a>(op: &str, v: &'a Json) -> Result<&'a str, PolicyError> {
    v.as_str().ok_or_else(|| PolicyError::policy(format!("{op} match pattern must be a string")))
}

fn compile_condition(v: &Json) -> Result<Condition, PolicyError> {
    let Json::Object(m) = v else { return literal(v).map(Condition::Exact) };
    let mut it = m.iter();
    let (Some((op, arg)), None) = (it.next(), it.next()) else {
        return Err(PolicyError::policy("Only one key allowed in match expression"));
    };
    match op.as_str() {
        "prefix" => Ok(Condition::Prefix(string_of(op, arg)?.into())),
        "suffix" => Ok(Condition::Suffix(string_of(op, arg)?.into())),
        "equals-ignore-case" => Ok(Condition::EqualsIgnoreCase(string_of(op, arg)?.to_lowercase().into())),
        "exists" => match arg {
            Json::Bool(b) => Ok(Condition::Exists(*b)),
            _ => Err(PolicyError::policy("exists match pattern must be either true or false.")),
        },
        "cidr" => match arg {
            Json::String(s) => Ok(Condition::Cidr(Cidr::parse(s)?)),
            _ => Err(PolicyError::policy("prefix match pattern must be a string")),
        },
        "numeric" => compile_numeric(arg),
        "anything-but" => compile_anything_but(arg),
        other => Err(PolicyError::policy(format!("Unrecognized match type {other}"))),
    }
}

fn compile_anything_but(arg: &Json) -> Result<Condition, PolicyError> {
    match arg {
        Json::Array(items) => {
            if items.is_empty() {
                return Err(PolicyError::policy("Empty arrays are not allowed"));
            }
            let list = items
                .iter()
                .map(|i| match i {
                    Json::String(_) | Json::Number(_) => literal(i),
                    _ => Err(PolicyError::policy("Inside anything but list, start|null|boolean is not supported.")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Condition::AnythingBut(list))
        }
        Json::Object(m) => {
            let mut it = m.iter();
            let (Some((op, inner)), None) = (it.next(), it.next()) else {
                return Err(PolicyError::policy("Only one key allowed in match expression"));
            };
            match op.as_str() {
                "prefix" => Ok(Condition::AnythingButPrefix(string_of(op, inner)?.into())),
                "suffix" => Ok(Condition::AnythingButSuffix(string_of(op, inner)?.into())),
                "equals-ignore-case" => {
                    let list = match inner {
                        Json::Array(items) if !items.is_empty() => items
                            .iter()
                            .map(|i| string_of(op, i).map(|s| s.to_lowercase().into()))
                            .collect::<Result<Vec<_>, _>>()?,
                        _ => vec![string_of(op, inner)?.to_lowercase().into()],
                    };
                    Ok(Condition::AnythingButIgnoreCase(list))
                }
                other => Err(PolicyError::policy(format!("Unsupported anything-but pattern: {other}"))),
            }
        }
        Json::String(_) | Json::Number(_) => Ok(Condition::AnythingBut(vec![literal(arg)?])),
        _ => Err(PolicyError::policy("Inside anything but list, start|null|boolean is not supported.")),
    }
}

fn compile_numeric(arg: &Json) -> Result<Condition, PolicyError> {
    let Json::Array(items) = arg else {
        return Err(PolicyError::policy("Value of numeric must be an array."));
    };
    let Some(first) = items.first() else {
        return Err(PolicyError::policy("Invalid member in numeric match: ]"));
    };
    let Some(op) = first.as_str() else {
        return Err(PolicyError::policy(format!("Invalid member in numeric match: {first}")));
    };
    let value_of = |op: &str, v: Option<&Json>| -> Result<f64, PolicyError> {
        let name = if op == "=" { "equals" } else { op };
        match v.and_then(number) {
            Some(n) => check_range(n),
            None => Err(PolicyError::policy(format!("Value of {name} must be numeric"))),
        }
    };
    let n = match op {
        "=" | "<" | "<=" | ">" | ">=" => value_of(op, items.get(1))?,
        other => return Err(PolicyError::policy(format!("Unrecognized numeric range operator: {other}"))),
    };
    let (mut low, mut high): (Bound, Bound) = (None, None);
    match op {
        "=" => {
            low = Some((n, true));
            high = Some((n, true));
        }
        "<" => high = Some((n, false)),
        "<=" => high = Some((n, true)),
        ">" => low = Some((n, false)),
        _ => low = Some((n, true)),
    }
    if items.len() == 2 {
        return Ok(Condition::Numeric { low, high });
    }
    if !matches!(op, ">" | ">=") {
        return Err(PolicyError::policy("Too many elements in numeric expression"));
    }
    let second = &items[2];
    let Some(op2) = second.as_str() else {
        return Err(PolicyError::policy(format!("Bad value in numeric range: {second}")));
    };
    if !matches!(op2, "<" | "<=") {
        return Err(PolicyError::policy(format!("Bad numeric range operator: {op2}")));
    }
    let top = value_of(op2, items.get(3))?;
    if top <= n {
        return Err(PolicyError::policy("Bottom must be less than top"));
    }
    if items.len() > 4 {
        return Err(PolicyError::policy("Too many terms in numeric range expression"));
    }
    high = Some((top, op2 == "<="));
    Ok(Condition::Numeric { low, high })
}
