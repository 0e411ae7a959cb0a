//! The query protocol's flattened parameters, as SNS names them: `Attributes.entry.N.key/value`,
//! `Tags.member.N.Key/Value`, `TagKeys.member.N`, `MessageAttributes.entry.N.Name` +
//! `.Value.DataType/StringValue/BinaryValue`, `PublishBatchRequestEntries.member.N.<Field>`.

use std::collections::BTreeMap;

use crate::sns::error::SnsError;

/// One request's parameters, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Params(Vec<(String, String)>);

/// A message attribute as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageAttr {
    /// `String`, `Number`, `Binary`, `String.Array` (and custom suffixes).
    pub data_type: String,
    /// The value for string-like types.
    pub string: Option<String>,
    /// The base64 text for `Binary`.
    pub binary: Option<String>,
}

impl Params {
    /// Parses a form body or a URL query string.
    pub fn parse(form: &[u8]) -> Params {
        Params(form_urlencoded::parse(form).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
    }

    /// Parameters whose names start with `prefix` (prefix removed).
    pub fn sub(&self, prefix: &str) -> Params {
        Params(
            self.0
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(prefix).map(|rest| (rest.to_string(), v.clone())))
                .collect(),
        )
    }

    /// A parameter's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A required parameter.
    pub fn required(&self, name: &str) -> Result<&str, SnsError> {
        self.get(name).ok_or_else(|| SnsError::param(format!("{name} Reason: cannot be empty")))
    }

    /// Groups `<prefix>N.<rest>` parameters by N, in index order.
    pub fn indexed(&self, prefix: &str) -> BTreeMap<u32, Params> {
        let mut out: BTreeMap<u32, Params> = BTreeMap::new();
        for (k, v) in &self.0 {
            let Some(rest) = k.strip_prefix(prefix) else { continue };
            let (n, tail) = rest.split_once('.').unwrap_or((rest, ""));
            if let Ok(n) = n.parse::<u32>() {
                out.entry(n).or_default().0.push((tail.to_string(), v.clone()));
            }
        }
        out
    }

    /// `<prefix>.entry.N.key` / `.value` as a map.
    pub fn entry_map(&self, prefix: &str) -> BTreeMap<String, String> {
        self.indexed(&format!("{prefix}.entry."))
            .values()
            .filter_map(|p| Some((p.get("key")?.to_string(), p.get("value").unwrap_or("").to_string())))
            .collect()
    }

    /// `Tags.member.N.Key` / `.Value` as a list.
    pub fn tags(&self, prefix: &str) -> Vec<(String, String)> {
        self.indexed(&format!("{prefix}.member."))
            .values()
            .filter_map(|p| Some((p.get("Key")?.to_string(), p.get("Value").unwrap_or("").to_string())))
            .collect()
    }

    /// `<prefix>.member.N` as a list.
    pub fn members(&self, prefix: &str) -> Vec<String> {
        self.indexed(&format!("{prefix}.member.")).values().filter_map(|p| p.get("").map(str::to_string)).collect()
    }

    /// `MessageAttributes.entry.N.Name` + `.Value.*` as a map.
    pub fn message_attributes(&self) -> BTreeMap<String, MessageAttr> {
        self.indexed("MessageAttributes.entry.")
            .values()
            .filter_map(|p| {
                let name = p.get("Name")?.to_string();
                let attr = MessageAttr {
                    data_type: p.get("Value.DataType").unwrap_or("").to_string(),
                    string: p.get("Value.StringValue").map(str::to_string),
                    binary: p.get("Value.BinaryValue").map(str::to_string),
                };
                Some((name, attr))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattened_shapes() {
        let p = Params::parse(
            b"Action=CreateTopic&Name=t&Attributes.entry.1.key=DisplayName&Attributes.entry.1.value=D\
&Tags.member.1.Key=k&Tags.member.1.Value=v&TagKeys.member.1=a&TagKeys.member.2=b\
&MessageAttributes.entry.1.Name=n&MessageAttributes.entry.1.Value.DataType=Number&MessageAttributes.entry.1.Value.StringValue=5",
        );
        assert_eq!(p.get("Name"), Some("t"));
        assert_eq!(p.entry_map("Attributes").get("DisplayName").map(String::as_str), Some("D"));
        assert_eq!(p.tags("Tags"), vec![("k".to_string(), "v".to_string())]);
        assert_eq!(p.members("TagKeys"), vec!["a".to_string(), "b".to_string()]);
        let a = p.message_attributes();
        assert_eq!(a["n"].data_type, "Number");
        assert_eq!(a["n"].string.as_deref(), Some("5"));
        let batch = Params::parse(b"PublishBatchRequestEntries.member.2.Id=b&PublishBatchRequestEntries.member.1.Id=a&PublishBatchRequestEntries.member.1.Message=m");
        let entries = batch.indexed("PublishBatchRequestEntries.member.");
        let ids: Vec<_> = entries.values().filter_map(|e| e.get("Id")).collect();
        assert_eq!(ids, vec!["a", "b"]);
    }
}
