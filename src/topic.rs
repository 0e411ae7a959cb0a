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

/// Every binding pattern of a topic exchange in one trie of words, so routing a key costs the
/// words of the key and the wildcard branches it meets, not one match per binding (an MQTT
/// broker with 10,000 devices has 10,000 bindings in `amq.topic`). Values are binding ids;
/// [`TopicTrie::matches`] returns each matching id once, in ascending order.
#[derive(Debug, Default)]
pub struct TopicTrie {
    root: Node,
}

#[derive(Debug, Default)]
struct Node {
    literal: std::collections::HashMap<Box<str>, Node>,
    star: Option<Box<Node>>,
    hash: Option<Box<Node>>,
    /// Ids of the patterns that end here.
    ids: Vec<usize>,
}

impl TopicTrie {
    /// Add pattern `pattern` with id `id`.
    pub fn insert(&mut self, pattern: &str, id: usize) {
        let mut node = &mut self.root;
        for word in TopicPattern::new(pattern).words {
            node = match word {
                Word::Literal(w) => node.literal.entry(w.into_boxed_str()).or_default(),
                Word::Star => node.star.get_or_insert_with(Box::default),
                Word::Hash => node.hash.get_or_insert_with(Box::default),
            };
        }
        node.ids.push(id);
    }

    /// The ids of every pattern `routing_key` matches, ascending, each once; appended to `out`
    /// (which is cleared first).
    pub fn matches(&self, routing_key: &str, out: &mut Vec<usize>) {
        out.clear();
        let key = words(routing_key);
        collect(&self.root, &key, out);
        out.sort_unstable();
        out.dedup();
    }
}

fn collect(node: &Node, key: &[&str], out: &mut Vec<usize>) {
    if let Some(hash) = &node.hash {
        // `#` takes zero or more words (consecutive `#`s were collapsed on insert).
        for skip in 0..=key.len() {
            collect(hash, &key[skip..], out);
        }
    }
    match key.split_first() {
        None => out.extend_from_slice(&node.ids),
        Some((word, rest)) => {
            if let Some(next) = node.literal.get(*word) {
                collect(next, rest, out);
            }
            if let Some(next) = &node.star {
                collect(next, rest, out);
            }
        }
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

    #[test]
    fn the_trie_routes_like_the_patterns_do() {
        let patterns = ["a.b", "a.*", "#", "a.#", "#.b", "*.*", "", "a.#.b", "#.a.#", "*", "a..b", "b.#.#"];
        let mut trie = TopicTrie::default();
        for (i, p) in patterns.iter().enumerate() {
            trie.insert(p, i);
        }
        let mut out = Vec::new();
        for key in ["", "a", "b", "a.b", "a.a", "a.b.b", "b.a.b", "a..b", "c.d.e", "a.x.y.b", "a.a.a"] {
            trie.matches(key, &mut out);
            let want: Vec<usize> = (0..patterns.len()).filter(|&i| m(patterns[i], key)).collect();
            assert_eq!(out, want, "key {key:?}");
        }
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        fn word() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec!["a", "b", "", "*", "#"])
        }

        proptest! {
            #[test]
            fn trie_and_linear_matching_agree(
                patterns in prop::collection::vec(prop::collection::vec(word(), 0..5), 1..12),
                keys in prop::collection::vec(prop::collection::vec(prop::sample::select(vec!["a", "b", "", "c"]), 0..6), 1..8),
            ) {
                let patterns: Vec<String> = patterns.iter().map(|p| p.join(".")).collect();
                let mut trie = TopicTrie::default();
                for (i, p) in patterns.iter().enumerate() {
                    trie.insert(p, i);
                }
                let mut out = Vec::new();
                for key in keys.iter().map(|k| k.join(".")) {
                    trie.matches(&key, &mut out);
                    let want: Vec<usize> =
                        (0..patterns.len()).filter(|&i| TopicPattern::new(&patterns[i]).matches(&key)).collect();
                    prop_assert_eq!(&out, &want, "key {:?}", key);
                }
            }
        }
    }
}
