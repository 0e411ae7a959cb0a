//! Topic-pattern matching for `topic` exchanges: `.`-separated words, `*`
//! matches exactly one word, `#` matches zero or more.
//!
//! MQTT filters are converted to this form by the MQTT front-end (`+` ⇄ `*`,
//! `/` ⇄ `.`), so this is the one matcher every protocol's wildcards use.

/// One word of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Word {
    Literal(String),
    Star,
    Hash,
}

/// A compiled binding pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    words: Vec<Word>,
}

/// Split a routing key into words; the empty key has no words, as in RabbitMQ.
fn words(key: &str) -> Vec<&str> {
    if key.is_empty() { Vec::new() } else { key.split('.').collect() }
}

impl TopicPattern {
    /// Compile a binding key.
    pub fn new(pattern: &str) -> TopicPattern {
        let mut out: Vec<Word> = Vec::new();
        for w in words(pattern) {
            let word = match w {
                "*" => Word::Star,
                "#" => Word::Hash,
                other => Word::Literal(other.to_string()),
            };
            // `#.#` matches exactly what `#` matches; collapsing keeps matching linear.
            if word == Word::Hash && out.last() == Some(&Word::Hash) {
                continue;
            }
            out.push(word);
        }
        TopicPattern { words: out }
    }

    /// True when `routing_key` matches this pattern.
    pub fn matches(&self, routing_key: &str) -> bool {
        let key = words(routing_key);
        matches_from(&self.words, &key)
    }
}

fn matches_from(pattern: &[Word], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((Word::Hash, rest)) => {
            if rest.is_empty() {
                return true;
            }
            (0..=key.len()).any(|skip| matches_from(rest, &key[skip..]))
        }
        Some((Word::Star, rest)) => !key.is_empty() && matches_from(rest, &key[1..]),
        Some((Word::Literal(lit), rest)) => key.first().is_some_and(|k| k == lit) && matches_from(rest, &key[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, k: &str) -> bool {
        TopicPattern::new(p).matches(k)
    }

    #[test]
    fn literal_and_star() {
        assert!(m("a.b.c", "a.b.c"));
        assert!(!m("a.b.c", "a.b"));
        assert!(m("a.*.c", "a.x.c"));
        assert!(!m("a.*.c", "a.c"));
        assert!(!m("*", ""));
        assert!(m("*", "x"));
        assert!(!m("*", "x.y"));
    }

    #[test]
    fn hash_matches_zero_or_more() {
        assert!(m("#", ""));
        assert!(m("#", "a.b.c"));
        assert!(m("a.#", "a"));
        assert!(m("a.#", "a.b.c"));
        assert!(m("a.#.b", "a.b"));
        assert!(m("a.#.b", "a.x.y.b"));
        assert!(!m("a.#.b", "a.x.y.c"));
        assert!(m("#.b", "b"));
        assert!(m("#.#.b", "x.b"));
        assert!(m("*.#", "a"));
        assert!(!m("*.#", ""));
        assert!(m("a.*.#", "a.b"));
        assert!(!m("a.*.#", "a"));
    }

    #[test]
    fn empty_words_are_words() {
        assert!(m("a..b", "a..b"));
        assert!(m("a.*.b", "a..b"));
        assert!(!m("*", ""));
        assert!(m("", ""));
        assert!(!m("", "a"));
    }
}
