//! JMS message selectors (the ActiveMQ `selector` SUBSCRIBE header): the
//! SQL-92 conditional-expression subset of the JMS 1.1 specification §3.8.1,
//! parsed once into an AST and evaluated per message.
//!
//! Supported: literals (strings `'it''s'`, exact and approximate numbers, `0x`
//! hex, `TRUE`/`FALSE`), identifiers, parentheses, `+ - * /` (unary too),
//! `= <> < <= > >=`, `AND OR NOT` with SQL's three-valued logic,
//! `[NOT] LIKE 'pat' [ESCAPE 'c']`, `[NOT] IN ('a', ...)`,
//! `[NOT] BETWEEN a AND b`, `IS [NOT] NULL`. Keywords are case-insensitive;
//! identifiers are case-sensitive.
//!
//! Identifiers name message properties: `JMSType`, `JMSCorrelationID`,
//! `JMSMessageID`, `JMSPriority` (4 when unset, the JMS default),
//! `JMSTimestamp` (milliseconds), `JMSDeliveryMode` (`'PERSISTENT'` or
//! `'NON_PERSISTENT'`) and `JMSReplyTo` map to the core's properties; any
//! other identifier is looked up in the message's headers table. A missing
//! property is SQL NULL, so a comparison with it is *unknown*, and a message
//! matches only when the whole selector is *true*.
//!
//! One deliberate leniency: STOMP headers are always strings, so when one side
//! of a comparison or arithmetic is a number and the other a string that
//! parses as a number, the string is compared as that number (`price > 10`
//! works on a `price:12` header). ActiveMQ does the same for STOMP messages.
//!
//! Bounded: selectors longer than [`MAX_SELECTOR_LEN`] bytes or nested deeper
//! than [`MAX_DEPTH`] are refused, so evaluation cannot overflow the stack.

use std::fmt;

use switchyard::message::{FieldValue, Message};
use switchyard::queue::state::MessageFilter;

/// Longest selector accepted, in bytes.
pub const MAX_SELECTOR_LEN: usize = 4096;
/// Deepest nesting of sub-expressions accepted.
pub const MAX_DEPTH: usize = 64;

/// Why a selector was refused; the text goes into the ERROR frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector at position {position}: {reason}")]
pub struct SelectorError {
    /// Byte offset into the selector where the problem was found.
    pub position: usize,
    /// What was wrong.
    pub reason: String,
}

/// A value during evaluation; `Null` is SQL's unknown.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Missing, or the result of an undefined operation.
    Null,
    /// A boolean.
    Bool(bool),
    /// An exact number.
    Int(i64),
    /// An approximate number.
    Float(f64),
    /// A string.
    Str(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Pat {
    Lit(char),
    One,
    Any,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Lit(Value),
    Ident(String),
    Neg(Box<Expr>),
    Arith(ArOp, Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Like { expr: Box<Expr>, pattern: Vec<Pat>, negated: bool },
    In { expr: Box<Expr>, list: Vec<Value>, negated: bool },
    Between { expr: Box<Expr>, lo: Box<Expr>, hi: Box<Expr>, negated: bool },
    IsNull { expr: Box<Expr>, negated: bool },
}

/// A parsed selector.
#[derive(Clone, PartialEq)]
pub struct Selector {
    source: String,
    expr: Expr,
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Selector").field(&self.source).finish()
    }
}

impl Selector {
    /// Parse a selector.
    pub fn parse(source: &str) -> Result<Selector, SelectorError> {
        if source.len() > MAX_SELECTOR_LEN {
            return Err(SelectorError {
                position: MAX_SELECTOR_LEN,
                reason: format!("selector longer than {MAX_SELECTOR_LEN} bytes"),
            });
        }
        let tokens = lex(source)?;
        let mut p = Parser { tokens, pos: 0, depth: 0, len: source.len() };
        let expr = p.expr()?;
        if let Some(t) = p.tokens.get(p.pos) {
            return Err(SelectorError { position: t.at, reason: format!("unexpected {}", t.tok) });
        }
        Ok(Selector { source: source.to_string(), expr })
    }

    /// The selector text as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// True if the selector is true for the properties `lookup` returns.
    pub fn eval_with(&self, lookup: &dyn Fn(&str) -> Value) -> bool {
        eval(&self.expr, lookup) == Value::Bool(true)
    }
}

impl MessageFilter for Selector {
    fn matches(&self, message: &Message) -> bool {
        self.eval_with(&|name| property(message, name))
    }
}

/// The value of identifier `name` for `message`; see the module docs.
pub fn property(message: &Message, name: &str) -> Value {
    let p = &message.properties;
    let text = |s: &Option<String>| s.as_ref().map_or(Value::Null, |s| Value::Str(s.clone()));
    match name {
        "JMSType" => text(&p.kind),
        "JMSCorrelationID" => text(&p.correlation_id),
        "JMSMessageID" => text(&p.message_id),
        "JMSReplyTo" => text(&p.reply_to),
        "JMSPriority" => Value::Int(p.priority.map_or(4, i64::from)),
        "JMSTimestamp" => p.timestamp.map_or(Value::Null, |t| Value::Int((t as i64).saturating_mul(1000))),
        "JMSDeliveryMode" => Value::Str(if p.is_persistent() { "PERSISTENT" } else { "NON_PERSISTENT" }.to_string()),
        _ => p.header(name).map_or(Value::Null, field_value),
    }
}

fn field_value(v: &FieldValue) -> Value {
    match v {
        FieldValue::Bool(b) => Value::Bool(*b),
        FieldValue::F32(f) => Value::Float(f64::from(*f)),
        FieldValue::F64(f) => Value::Float(*f),
        FieldValue::Decimal { scale, value } => Value::Float(f64::from(*value) / 10f64.powi(i32::from(*scale))),
        FieldValue::ShortString(_) | FieldValue::LongString(_) => {
            v.as_str().map_or(Value::Null, |s| Value::Str(s.into()))
        }
        other => other.as_i64().map_or(Value::Null, Value::Int),
    }
}

// ---------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Str(String),
    Int(i64),
    Float(f64),
    Ident(String),
    Kw(Kw),
    Op(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kw {
    And,
    Or,
    Not,
    Like,
    Escape,
    In,
    Between,
    Is,
    Null,
    True,
    False,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Str(s) => write!(f, "string '{s}'"),
            Tok::Int(n) => write!(f, "number {n}"),
            Tok::Float(n) => write!(f, "number {n}"),
            Tok::Ident(s) => write!(f, "identifier {s}"),
            Tok::Kw(k) => write!(f, "keyword {}", format!("{k:?}").to_uppercase()),
            Tok::Op(o) => write!(f, "'{o}'"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    at: usize,
}

fn keyword(word: &str) -> Option<Kw> {
    Some(match word.to_ascii_uppercase().as_str() {
        "AND" => Kw::And,
        "OR" => Kw::Or,
        "NOT" => Kw::Not,
        "LIKE" => Kw::Like,
        "ESCAPE" => Kw::Escape,
        "IN" => Kw::In,
        "BETWEEN" => Kw::Between,
        "IS" => Kw::Is,
        "NULL" => Kw::Null,
        "TRUE" => Kw::True,
        "FALSE" => Kw::False,
        _ => return None,
    })
}

fn lex(src: &str) -> Result<Vec<Token>, SelectorError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |at: usize, reason: String| SelectorError { position: at, reason };
    while i < b.len() {
        let c = b[i];
        let at = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'\'' {
            let mut s = Vec::new();
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err(err(at, "unterminated string literal".into())),
                    Some(b'\'') if b.get(i + 1) == Some(&b'\'') => {
                        s.push(b'\'');
                        i += 2;
                    }
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(&x) => {
                        s.push(x);
                        i += 1;
                    }
                }
            }
            // The input is a &str and quotes are ASCII, so the slice is UTF-8.
            let s = String::from_utf8(s).map_err(|_| err(at, "string literal is not UTF-8".into()))?;
            out.push(Token { tok: Tok::Str(s), at });
            continue;
        }
        if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let (tok, len) = lex_number(&src[i..]).map_err(|r| err(at, r))?;
            out.push(Token { tok, at });
            i += len;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c >= 0x80 {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80) {
                i += 1;
            }
            let word = &src[start..i];
            let tok = keyword(word).map_or_else(|| Tok::Ident(word.to_string()), Tok::Kw);
            out.push(Token { tok, at });
            continue;
        }
        let two = src.get(i..i + 2);
        let op: &'static str = match (two, c) {
            (Some("<>"), _) => "<>",
            (Some("!="), _) => "<>",
            (Some("<="), _) => "<=",
            (Some(">="), _) => ">=",
            (_, b'=') => "=",
            (_, b'<') => "<",
            (_, b'>') => ">",
            (_, b'+') => "+",
            (_, b'-') => "-",
            (_, b'*') => "*",
            (_, b'/') => "/",
            (_, b'(') => "(",
            (_, b')') => ")",
            (_, b',') => ",",
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(err(at, format!("unexpected character '{ch}'")));
            }
        };
        i += if matches!(two, Some("<>" | "!=" | "<=" | ">=")) { 2 } else { 1 };
        out.push(Token { tok: Tok::Op(op), at });
    }
    Ok(out)
}

/// A numeric literal at the start of `s`: returns the token and its length.
fn lex_number(s: &str) -> Result<(Tok, usize), String> {
    let b = s.as_bytes();
    if b.len() > 2 && b[0] == b'0' && (b[1] == b'x' || b[1] == b'X') {
        let end = 2 + b[2..].iter().take_while(|c| c.is_ascii_hexdigit()).count();
        let n = i64::from_str_radix(&s[2..end], 16).map_err(|e| format!("bad hex literal: {e}"))?;
        let len = if matches!(b.get(end), Some(b'l' | b'L')) { end + 1 } else { end };
        return Ok((Tok::Int(n), len));
    }
    let mut i = b.iter().take_while(|c| c.is_ascii_digit()).count();
    let mut float = false;
    if b.get(i) == Some(&b'.') {
        float = true;
        i += 1;
        i += b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let digits = b[j.min(b.len())..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits > 0 {
            float = true;
            i = j + digits;
        }
    }
    let text = &s[..i];
    if float || matches!(b.get(i), Some(b'f' | b'F' | b'd' | b'D')) {
        let len = if matches!(b.get(i), Some(b'f' | b'F' | b'd' | b'D')) { i + 1 } else { i };
        let f: f64 = text.parse().map_err(|e| format!("bad number '{text}': {e}"))?;
        return Ok((Tok::Float(f), len));
    }
    let n: i64 = text.parse().map_err(|_| format!("integer literal '{text}' out of range"))?;
    let len = if matches!(b.get(i), Some(b'l' | b'L')) { i + 1 } else { i };
    Ok((Tok::Int(n), len))
}

// ---------------------------------------------------------------------------
// Parser: recursive descent, one function per precedence level.

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    len: usize,
}

type PResult = Result<Expr, SelectorError>;

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.tok)
    }

    fn at(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.len, |t| t.at)
    }

    fn err(&self, reason: impl Into<String>) -> SelectorError {
        SelectorError { position: self.at(), reason: reason.into() }
    }

    fn eat_kw(&mut self, kw: Kw) -> bool {
        if self.peek() == Some(&Tok::Kw(kw)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Op(o)) if *o == op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_op(&mut self, op: &str) -> Result<(), SelectorError> {
        if self.eat_op(op) { Ok(()) } else { Err(self.expected(&format!("'{op}'"))) }
    }

    fn expected(&self, what: &str) -> SelectorError {
        match self.peek() {
            Some(t) => self.err(format!("expected {what}, found {t}")),
            None => self.err(format!("expected {what} at end of selector")),
        }
    }

    fn descend(&mut self) -> Result<(), SelectorError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH { Err(self.err(format!("nested deeper than {MAX_DEPTH} levels"))) } else { Ok(()) }
    }

    fn expr(&mut self) -> PResult {
        self.descend()?;
        let mut left = self.and()?;
        while self.eat_kw(Kw::Or) {
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        self.depth -= 1;
        Ok(left)
    }

    fn and(&mut self) -> PResult {
        let mut left = self.not()?;
        while self.eat_kw(Kw::And) {
            let right = self.not()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> PResult {
        if self.eat_kw(Kw::Not) {
            self.descend()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.predicate()
    }

    fn predicate(&mut self) -> PResult {
        let left = self.sum()?;
        let op = match self.peek() {
            Some(Tok::Op("=")) => Some(CmpOp::Eq),
            Some(Tok::Op("<>")) => Some(CmpOp::Ne),
            Some(Tok::Op("<")) => Some(CmpOp::Lt),
            Some(Tok::Op("<=")) => Some(CmpOp::Le),
            Some(Tok::Op(">")) => Some(CmpOp::Gt),
            Some(Tok::Op(">=")) => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(op) = op {
            self.pos += 1;
            let right = self.sum()?;
            return Ok(Expr::Cmp(op, Box::new(left), Box::new(right)));
        }
        if self.eat_kw(Kw::Is) {
            let negated = self.eat_kw(Kw::Not);
            if !self.eat_kw(Kw::Null) {
                return Err(self.expected("NULL"));
            }
            return Ok(Expr::IsNull { expr: Box::new(left), negated });
        }
        let negated = self.eat_kw(Kw::Not);
        if self.eat_kw(Kw::Like) {
            let pattern = self.string_literal()?;
            let escape = if self.eat_kw(Kw::Escape) {
                let e = self.string_literal()?;
                let mut chars = e.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => Some(c),
                    _ => return Err(self.err("ESCAPE must be a single character")),
                }
            } else {
                None
            };
            let pattern = compile_like(&pattern, escape).map_err(|r| self.err(r))?;
            return Ok(Expr::Like { expr: Box::new(left), pattern, negated });
        }
        if self.eat_kw(Kw::In) {
            self.expect_op("(")?;
            let mut list = Vec::new();
            loop {
                list.push(self.literal()?);
                if !self.eat_op(",") {
                    break;
                }
            }
            self.expect_op(")")?;
            return Ok(Expr::In { expr: Box::new(left), list, negated });
        }
        if self.eat_kw(Kw::Between) {
            let lo = self.sum()?;
            if !self.eat_kw(Kw::And) {
                return Err(self.expected("AND"));
            }
            let hi = self.sum()?;
            return Ok(Expr::Between { expr: Box::new(left), lo: Box::new(lo), hi: Box::new(hi), negated });
        }
        if negated {
            return Err(self.expected("LIKE, IN or BETWEEN after NOT"));
        }
        Ok(left)
    }

    fn string_literal(&mut self) -> Result<String, SelectorError> {
        match self.peek() {
            Some(Tok::Str(s)) => {
                let s = s.clone();
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.expected("a string literal")),
        }
    }

    fn literal(&mut self) -> Result<Value, SelectorError> {
        let neg = self.eat_op("-");
        let v = match self.peek() {
            Some(Tok::Str(s)) if !neg => Value::Str(s.clone()),
            Some(Tok::Int(n)) => Value::Int(if neg { -n } else { *n }),
            Some(Tok::Float(f)) => Value::Float(if neg { -f } else { *f }),
            Some(Tok::Kw(Kw::True)) if !neg => Value::Bool(true),
            Some(Tok::Kw(Kw::False)) if !neg => Value::Bool(false),
            _ => return Err(self.expected("a literal")),
        };
        self.pos += 1;
        Ok(v)
    }

    fn sum(&mut self) -> PResult {
        let mut left = self.product()?;
        loop {
            let op = if self.eat_op("+") {
                ArOp::Add
            } else if self.eat_op("-") {
                ArOp::Sub
            } else {
                return Ok(left);
            };
            let right = self.product()?;
            left = Expr::Arith(op, Box::new(left), Box::new(right));
        }
    }

    fn product(&mut self) -> PResult {
        let mut left = self.unary()?;
        loop {
            let op = if self.eat_op("*") {
                ArOp::Mul
            } else if self.eat_op("/") {
                ArOp::Div
            } else {
                return Ok(left);
            };
            let right = self.unary()?;
            left = Expr::Arith(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> PResult {
        if self.eat_op("-") {
            self.descend()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(match inner {
                Expr::Lit(Value::Int(n)) => Expr::Lit(Value::Int(-n)),
                Expr::Lit(Value::Float(f)) => Expr::Lit(Value::Float(-f)),
                other => Expr::Neg(Box::new(other)),
            });
        }
        if self.eat_op("+") {
            self.descend()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(inner);
        }
        self.primary()
    }

    fn primary(&mut self) -> PResult {
        let Some(tok) = self.peek().cloned() else { return Err(self.expected("an expression")) };
        let e = match tok {
            Tok::Op("(") => {
                self.pos += 1;
                let e = self.expr()?;
                self.expect_op(")")?;
                return Ok(e);
            }
            Tok::Str(s) => Expr::Lit(Value::Str(s)),
            Tok::Int(n) => Expr::Lit(Value::Int(n)),
            Tok::Float(f) => Expr::Lit(Value::Float(f)),
            Tok::Kw(Kw::True) => Expr::Lit(Value::Bool(true)),
            Tok::Kw(Kw::False) => Expr::Lit(Value::Bool(false)),
            Tok::Kw(Kw::Null) => Expr::Lit(Value::Null),
            Tok::Ident(name) => Expr::Ident(name),
            _ => return Err(self.expected("an expression")),
        };
        self.pos += 1;
        Ok(e)
    }
}

fn compile_like(pattern: &str, escape: Option<char>) -> Result<Vec<Pat>, String> {
    let mut out = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if Some(c) == escape {
            match chars.next() {
                Some(n) => out.push(Pat::Lit(n)),
                None => return Err("LIKE pattern ends with the escape character".into()),
            }
        } else if c == '%' {
            if out.last() != Some(&Pat::Any) {
                out.push(Pat::Any);
            }
        } else if c == '_' {
            out.push(Pat::One);
        } else {
            out.push(Pat::Lit(c));
        }
    }
    Ok(out)
}

/// Wildcard match with backtracking to the last `%` (linear in practice).
fn like(s: &str, p: &[Pat]) -> bool {
    let s: Vec<char> = s.chars().collect();
    let (mut si, mut pi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(Pat::One) => {
                si += 1;
                pi += 1;
                continue;
            }
            Some(Pat::Lit(c)) if *c == s[si] => {
                si += 1;
                pi += 1;
                continue;
            }
            Some(Pat::Any) => {
                star = Some((pi, si));
                pi += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, ss)) => {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    p[pi.min(p.len())..].iter().all(|x| *x == Pat::Any)
}

// ---------------------------------------------------------------------------
// Evaluation

fn as_number(v: &Value) -> Option<Value> {
    match v {
        Value::Int(_) | Value::Float(_) => Some(v.clone()),
        Value::Str(s) => {
            let t = s.trim();
            t.parse::<i64>().map(Value::Int).ok().or_else(|| t.parse::<f64>().ok().map(Value::Float))
        }
        _ => None,
    }
}

fn is_number(v: &Value) -> bool {
    matches!(v, Value::Int(_) | Value::Float(_))
}

/// Both operands as numbers, coercing a numeric string when the other side is a number.
fn numbers(a: &Value, b: &Value) -> Option<(Value, Value)> {
    if !(is_number(a) || is_number(b)) {
        return None;
    }
    Some((as_number(a)?, as_number(b)?))
}

fn to_f64(v: &Value) -> f64 {
    match v {
        Value::Int(n) => *n as f64,
        Value::Float(f) => *f,
        _ => f64::NAN,
    }
}

fn arith(op: ArOp, a: &Value, b: &Value) -> Value {
    let Some((a, b)) = numbers(a, b) else { return Value::Null };
    if let (Value::Int(x), Value::Int(y)) = (&a, &b) {
        let r = match op {
            ArOp::Add => x.checked_add(*y),
            ArOp::Sub => x.checked_sub(*y),
            ArOp::Mul => x.checked_mul(*y),
            ArOp::Div if *y == 0 => return Value::Null,
            ArOp::Div => x.checked_div(*y),
        };
        if let Some(r) = r {
            return Value::Int(r);
        }
    }
    let (x, y) = (to_f64(&a), to_f64(&b));
    let r = match op {
        ArOp::Add => x + y,
        ArOp::Sub => x - y,
        ArOp::Mul => x * y,
        ArOp::Div if y == 0.0 => return Value::Null,
        ArOp::Div => x / y,
    };
    Value::Float(r)
}

fn compare(op: CmpOp, a: &Value, b: &Value) -> Value {
    if matches!(a, Value::Null) || matches!(b, Value::Null) {
        return Value::Null;
    }
    let ord = if let Some((x, y)) = numbers(a, b) {
        match (&x, &y) {
            (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
            _ => to_f64(&x).partial_cmp(&to_f64(&y)),
        }
    } else {
        match (a, b) {
            // JMS: strings and booleans compare only with = and <>.
            (Value::Str(x), Value::Str(y)) if matches!(op, CmpOp::Eq | CmpOp::Ne) => Some(x.cmp(y)),
            (Value::Bool(x), Value::Bool(y)) if matches!(op, CmpOp::Eq | CmpOp::Ne) => Some(x.cmp(y)),
            _ => None,
        }
    };
    let Some(ord) = ord else { return Value::Null };
    Value::Bool(match op {
        CmpOp::Eq => ord.is_eq(),
        CmpOp::Ne => ord.is_ne(),
        CmpOp::Lt => ord.is_lt(),
        CmpOp::Le => ord.is_le(),
        CmpOp::Gt => ord.is_gt(),
        CmpOp::Ge => ord.is_ge(),
    })
}

fn truth(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}

fn not(v: Value) -> Value {
    truth(&v).map_or(Value::Null, |b| Value::Bool(!b))
}

fn negate_if(negated: bool, v: Value) -> Value {
    if negated { not(v) } else { v }
}

fn eval(e: &Expr, lookup: &dyn Fn(&str) -> Value) -> Value {
    match e {
        Expr::Lit(v) => v.clone(),
        Expr::Ident(name) => lookup(name),
        Expr::Neg(inner) => arith(ArOp::Sub, &Value::Int(0), &eval(inner, lookup)),
        Expr::Arith(op, a, b) => arith(*op, &eval(a, lookup), &eval(b, lookup)),
        Expr::Cmp(op, a, b) => compare(*op, &eval(a, lookup), &eval(b, lookup)),
        Expr::And(a, b) => {
            let x = truth(&eval(a, lookup));
            if x == Some(false) {
                return Value::Bool(false);
            }
            match (x, truth(&eval(b, lookup))) {
                (_, Some(false)) => Value::Bool(false),
                (Some(true), Some(true)) => Value::Bool(true),
                _ => Value::Null,
            }
        }
        Expr::Or(a, b) => {
            let x = truth(&eval(a, lookup));
            if x == Some(true) {
                return Value::Bool(true);
            }
            match (x, truth(&eval(b, lookup))) {
                (_, Some(true)) => Value::Bool(true),
                (Some(false), Some(false)) => Value::Bool(false),
                _ => Value::Null,
            }
        }
        Expr::Not(inner) => not(eval(inner, lookup)),
        Expr::Like { expr, pattern, negated } => match eval(expr, lookup) {
            Value::Str(s) => negate_if(*negated, Value::Bool(like(&s, pattern))),
            _ => Value::Null,
        },
        Expr::In { expr, list, negated } => {
            let v = eval(expr, lookup);
            if v == Value::Null {
                return Value::Null;
            }
            let found = list.iter().any(|item| compare(CmpOp::Eq, &v, item) == Value::Bool(true));
            negate_if(*negated, Value::Bool(found))
        }
        Expr::Between { expr, lo, hi, negated } => {
            let v = eval(expr, lookup);
            let ge = compare(CmpOp::Ge, &v, &eval(lo, lookup));
            let le = compare(CmpOp::Le, &v, &eval(hi, lookup));
            let both = match (truth(&ge), truth(&le)) {
                (Some(false), _) | (_, Some(false)) => Value::Bool(false),
                (Some(true), Some(true)) => Value::Bool(true),
                _ => Value::Null,
            };
            negate_if(*negated, both)
        }
        Expr::IsNull { expr, negated } => {
            let null = eval(expr, lookup) == Value::Null;
            Value::Bool(null != *negated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use switchyard::message::{FieldTable, Properties};

    fn props<'a>(pairs: &'a [(&'a str, Value)]) -> impl Fn(&str) -> Value + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map_or(Value::Null, |(_, v)| v.clone())
    }

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn check(s: &str, pairs: &[(&str, Value)]) -> bool {
        sel(s).eval_with(&props(pairs))
    }

    fn text(s: &str) -> Value {
        Value::Str(s.to_string())
    }

    #[test]
    fn comparisons() {
        let p = [("color", text("red")), ("n", Value::Int(5)), ("f", Value::Float(2.5))];
        for (s, want) in [
            ("color = 'red'", true),
            ("color <> 'red'", false),
            ("color != 'blue'", true),
            ("n = 5", true),
            ("n > 4 AND n < 6", true),
            ("n >= 5 AND n <= 5", true),
            ("f < 3", true),
            ("n = 5.0", true),
            ("color > 'a'", false),
            ("missing = 1", false),
            ("missing <> 1", false),
            ("TRUE", true),
            ("FALSE", false),
            ("TRUE = TRUE", true),
        ] {
            assert_eq!(check(s, &p), want, "{s}");
        }
    }

    #[test]
    fn three_valued_logic() {
        let p = [("a", Value::Int(1))];
        assert!(!check("missing = 1 OR a = 2", &p));
        assert!(check("missing = 1 OR a = 1", &p));
        assert!(!check("missing = 1 AND a = 1", &p));
        assert!(!check("NOT (missing = 1)", &p), "NOT unknown is unknown");
        assert!(check("NOT (a = 2)", &p));
        assert!(check("NOT a = 2 AND a = 1", &p), "NOT binds tighter than AND");
        assert!(check("a = 2 OR a = 1 AND a = 1", &p), "AND binds tighter than OR");
    }

    #[test]
    fn arithmetic() {
        let p = [("a", Value::Int(7)), ("b", Value::Int(2))];
        for (s, want) in [
            ("a + b = 9", true),
            ("a - b * 2 = 3", true),
            ("(a - b) * 2 = 10", true),
            ("a / b = 3", true),
            ("a / 2.0 = 3.5", true),
            ("-a = -7", true),
            ("- -a = 7", true),
            ("a / 0 = 1", false),
            ("a + missing = 7", false),
            ("a * 1e2 = 700", true),
            ("0x10 = 16", true),
        ] {
            assert_eq!(check(s, &p), want, "{s}");
        }
    }

    #[test]
    fn like_in_between_null() {
        let p = [("s", text("abc_def")), ("n", Value::Int(5))];
        for (s, want) in [
            ("s LIKE 'abc%'", true),
            ("s LIKE 'a_c%f'", true),
            ("s LIKE 'abc'", false),
            ("s NOT LIKE 'x%'", true),
            ("s LIKE 'abc!_d%' ESCAPE '!'", true),
            ("s LIKE 'abcXd%' ESCAPE 'X'", false),
            ("s LIKE '%def'", true),
            ("s LIKE '%%c%%'", true),
            ("missing LIKE '%'", false),
            ("missing NOT LIKE '%'", false),
            ("s IN ('x', 'abc_def')", true),
            ("s NOT IN ('x', 'y')", true),
            ("missing IN ('x')", false),
            ("missing NOT IN ('x')", false),
            ("n IN (1, 5)", true),
            ("n BETWEEN 1 AND 5", true),
            ("n BETWEEN 6 AND 9", false),
            ("n NOT BETWEEN 6 AND 9", true),
            ("n BETWEEN 1 + 3 AND 2 * 3", true),
            ("missing IS NULL", true),
            ("s IS NULL", false),
            ("s IS NOT NULL", true),
        ] {
            assert_eq!(check(s, &p), want, "{s}");
        }
    }

    #[test]
    fn keywords_are_case_insensitive_and_strings_escape_quotes() {
        let p = [("name", text("it's"))];
        assert!(check("name = 'it''s' and not name is null", &p));
        assert!(check("name like 'it%' Or FALSE", &p));
    }

    #[test]
    fn numeric_strings_compare_as_numbers() {
        let p = [("price", text("12")), ("label", text("abc"))];
        assert!(check("price > 10", &p));
        assert!(check("price = 12", &p));
        assert!(check("price + 1 = 13", &p));
        assert!(!check("label > 10", &p));
        assert!(!check("price = '12.0'", &p), "string vs string stays a string comparison");
    }

    #[test]
    fn errors_have_positions() {
        for (s, pos) in [
            ("a =", 3),
            ("a = 'x", 4),
            ("a # 1", 2),
            ("(a = 1", 6),
            ("a LIKE 5", 7),
            ("a IS 5", 5),
            ("a NOT 5", 6),
            ("a = 1 b", 6),
            ("a LIKE 'x' ESCAPE 'ab'", 22),
            ("a BETWEEN 1 OR 2", 12),
            ("a IN ()", 6),
            ("99999999999999999999 = 1", 0),
        ] {
            match Selector::parse(s) {
                Err(e) => assert_eq!(e.position, pos, "{s}: {e}"),
                Ok(_) => panic!("{s} parsed"),
            }
        }
    }

    #[test]
    fn limits() {
        let deep = format!("{}a = 1{}", "(".repeat(MAX_DEPTH + 1), ")".repeat(MAX_DEPTH + 1));
        assert!(Selector::parse(&deep).is_err());
        let nots = format!("{}TRUE", "NOT ".repeat(10_000));
        assert!(Selector::parse(&nots).is_err());
        let negs = format!("{}1 = 1", "-".repeat(10_000));
        assert!(Selector::parse(&negs).is_err());
        let long = format!("a = '{}'", "x".repeat(MAX_SELECTOR_LEN));
        assert!(Selector::parse(&long).is_err());
        let ok = format!("{}a = 1{}", "(".repeat(10), ")".repeat(10));
        assert!(check(&ok, &[("a", Value::Int(1))]));
    }

    #[test]
    fn message_properties_and_headers() {
        let mut headers = FieldTable::new();
        headers.insert("color".into(), FieldValue::text("red"));
        headers.insert("weight".into(), FieldValue::I32(12));
        headers.insert("urgent".into(), FieldValue::Bool(true));
        let props = Properties {
            kind: Some("order".into()),
            correlation_id: Some("c-1".into()),
            message_id: Some("m-1".into()),
            priority: Some(7),
            timestamp: Some(1_700_000_000),
            delivery_mode: Some(2),
            headers: Some(headers),
            ..Properties::default()
        };
        let m = Message::new("", "q", props, Bytes::new());
        for (s, want) in [
            ("JMSType = 'order'", true),
            ("JMSCorrelationID = 'c-1'", true),
            ("JMSMessageID = 'm-1'", true),
            ("JMSPriority > 5", true),
            ("JMSTimestamp = 1700000000000", true),
            ("JMSDeliveryMode = 'PERSISTENT'", true),
            ("color = 'red' AND weight BETWEEN 10 AND 20 AND urgent", true),
            ("urgent = FALSE", false),
        ] {
            assert_eq!(sel(s).matches(&m), want, "{s}");
        }
        let plain = Message::new("", "q", Properties::default(), Bytes::new());
        assert!(sel("JMSPriority = 4").matches(&plain), "JMS default priority");
        assert!(sel("JMSDeliveryMode = 'NON_PERSISTENT'").matches(&plain));
    }
}
