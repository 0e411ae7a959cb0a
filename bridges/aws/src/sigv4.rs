//! AWS Signature Version 4 verification, for every AWS API on this listener (SQS, SNS,
//! Kinesis): the signature in an `Authorization: AWS4-HMAC-SHA256 ...` header, or in the
//! query string (`X-Amz-Signature`, presigned URLs), is recomputed with the secret key
//! configured for its access key id and compared in constant time.
//!
//! Pure Rust: HMAC-SHA256 from the RustCrypto `hmac` and `sha2` crates, so the default
//! build pulls in no C crypto.
//!
//! The canonical request is AWS's: method, URI path (each segment URI-encoded), query
//! parameters sorted and encoded, the signed headers (lower-case names, trimmed values with
//! inner runs of spaces collapsed), the signed header list, and the payload hash (the
//! `x-amz-content-sha256` header if sent, else SHA-256 of the body; `UNSIGNED-PAYLOAD` for
//! query-string signatures).

use std::collections::BTreeMap;

use axum::http::{HeaderMap, Method, Uri};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::{AuthFailure, AwsError};

/// How far a request's `X-Amz-Date` may be from now (AWS allows 15 minutes).
const MAX_SKEW_SECS: i64 = 15 * 60;

/// HMAC-SHA256 of `data` under `key` (RFC 2104).
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so construction cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The SigV4 signing key for `secret` on `date` (`YYYYMMDD`), `region` and `service`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac_sha256(&k, region.as_bytes());
    let k = hmac_sha256(&k, service.as_bytes());
    hmac_sha256(&k, b"aws4_request")
}

/// URI-encodes `s` as SigV4 wants: everything but `A-Za-z0-9-_.~` (and `/` if `keep_slash`).
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The parts of a signature, from the header or the query string.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    access_key: String,
    date: String,
    region: String,
    service: String,
    signed_headers: Vec<String>,
    signature: String,
    amz_date: String,
    /// Seconds a presigned URL stays valid (query-string signatures only).
    expires: Option<i64>,
    from_query: bool,
}

fn incomplete(why: &str) -> AwsError {
    AwsError::Auth(AuthFailure::Incomplete, why.to_string())
}

/// `Credential=AKID/20250101/us-east-1/sqs/aws4_request` split into its parts.
fn credential_scope(c: &str) -> Result<(String, String, String, String), AwsError> {
    let parts: Vec<&str> = c.split('/').collect();
    match parts[..] {
        [key, date, region, service, "aws4_request"] if !key.is_empty() && date.len() == 8 => {
            Ok((key.to_string(), date.to_string(), region.to_string(), service.to_string()))
        }
        _ => Err(incomplete(&format!("Credential should be scoped to a valid region and service: {c}"))),
    }
}

fn parse(headers: &HeaderMap, query: &[(String, String)]) -> Result<Parsed, AwsError> {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(auth) = header("authorization") {
        let rest = auth
            .strip_prefix("AWS4-HMAC-SHA256")
            .ok_or_else(|| incomplete("Only AWS4-HMAC-SHA256 Authorization headers are supported."))?;
        let mut fields = BTreeMap::new();
        for part in rest.split(',') {
            if let Some((k, v)) = part.trim().split_once('=') {
                fields.insert(k.trim(), v.trim());
            }
        }
        let get = |k: &str| {
            fields.get(k).copied().ok_or_else(|| incomplete(&format!("Authorization header requires '{k}' parameter.")))
        };
        let (access_key, date, region, service) = credential_scope(get("Credential")?)?;
        let amz_date = header("x-amz-date")
            .ok_or_else(|| {
                incomplete("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
            })?
            .to_string();
        return Ok(Parsed {
            access_key,
            date,
            region,
            service,
            signed_headers: get("SignedHeaders")?.split(';').map(str::to_string).collect(),
            signature: get("Signature")?.to_string(),
            amz_date,
            expires: None,
            from_query: false,
        });
    }
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let Some(signature) = q("X-Amz-Signature") else {
        return Err(AwsError::Auth(AuthFailure::Missing, "Request is missing Authentication Token".into()));
    };
    if q("X-Amz-Algorithm") != Some("AWS4-HMAC-SHA256") {
        return Err(incomplete("X-Amz-Algorithm must be AWS4-HMAC-SHA256."));
    }
    let (access_key, date, region, service) =
        credential_scope(q("X-Amz-Credential").ok_or_else(|| incomplete("X-Amz-Credential is missing."))?)?;
    Ok(Parsed {
        access_key,
        date,
        region,
        service,
        signed_headers: q("X-Amz-SignedHeaders")
            .ok_or_else(|| incomplete("X-Amz-SignedHeaders is missing."))?
            .split(';')
            .map(str::to_string)
            .collect(),
        signature: signature.to_string(),
        amz_date: q("X-Amz-Date").ok_or_else(|| incomplete("X-Amz-Date is missing."))?.to_string(),
        expires: q("X-Amz-Expires").and_then(|e| e.parse().ok()),
        from_query: true,
    })
}

/// Seconds since the epoch of an `X-Amz-Date` (`YYYYMMDDTHHMMSSZ`).
fn epoch_of(amz_date: &str) -> Option<i64> {
    let b = amz_date.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| amz_date.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// The canonical query string: every parameter but the signature, sorted, encoded.
fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| k != "X-Amz-Signature")
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// The request parts a signature covers.
#[derive(Debug)]
pub struct Request<'a> {
    /// HTTP method.
    pub method: &'a Method,
    /// The request URI as received.
    pub uri: &'a Uri,
    /// The headers as received.
    pub headers: &'a HeaderMap,
    /// The body.
    pub body: &'a [u8],
}

/// Verifies the request's SigV4 signature against `credentials` (access key id → secret)
/// at time `now` (epoch seconds). `Ok` carries the access key id.
pub fn verify(req: &Request<'_>, credentials: &BTreeMap<String, String>, now: i64) -> Result<String, AwsError> {
    let query: Vec<(String, String)> = req
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default();
    let p = parse(req.headers, &query)?;
    let secret = credentials.get(&p.access_key).ok_or_else(|| {
        AwsError::Auth(AuthFailure::UnknownKey, "The security token included in the request is invalid.".into())
    })?;
    let at = epoch_of(&p.amz_date).ok_or_else(|| incomplete(&format!("Invalid X-Amz-Date {}", p.amz_date)))?;
    if !p.amz_date.starts_with(&p.date) {
        return Err(AwsError::Auth(
            AuthFailure::BadSignature,
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP".into(),
        ));
    }
    match p.expires {
        Some(e) if now > at + e => {
            return Err(AwsError::Auth(AuthFailure::Expired, "Request has expired.".into()));
        }
        None if (now - at).abs() > MAX_SKEW_SECS => {
            return Err(AwsError::Auth(
                AuthFailure::Expired,
                format!("Signature expired: {} is now earlier or later than 15 minutes from now.", p.amz_date),
            ));
        }
        _ => {}
    }
    if !p.signed_headers.iter().any(|h| h == "host") {
        return Err(incomplete("The host header must be signed."));
    }
    let mut canonical_headers = String::new();
    for name in &p.signed_headers {
        let values: Vec<String> = req
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let path = req.uri.path();
    let decoded: String = path
        .split('/')
        .map(|seg| {
            let raw = form_urlencoded::parse(format!("x={}", seg.replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            uri_encode(&raw, false)
        })
        .collect::<Vec<_>>()
        .join("/");
    let path = if decoded.is_empty() { "/".to_string() } else { decoded };
    let body_hash = hex::encode(Sha256::digest(req.body));
    let mut payloads = Vec::new();
    if let Some(h) = req.headers.get("x-amz-content-sha256").and_then(|v| v.to_str().ok()) {
        payloads.push(h.to_string());
    }
    if p.from_query {
        payloads.push("UNSIGNED-PAYLOAD".into());
    }
    payloads.push(body_hash);
    let key = signing_key(secret, &p.date, &p.region, &p.service);
    let scope = format!("{}/{}/{}/aws4_request", p.date, p.region, p.service);
    let query = canonical_query(&query);
    for payload in payloads {
        let canonical = format!(
            "{}\n{path}\n{query}\n{canonical_headers}\n{}\n{payload}",
            req.method.as_str(),
            p.signed_headers.join(";")
        );
        let to_sign =
            format!("AWS4-HMAC-SHA256\n{}\n{scope}\n{}", p.amz_date, hex::encode(Sha256::digest(canonical.as_bytes())));
        let expected = hex::encode(hmac_sha256(&key, to_sign.as_bytes()));
        if constant_time_eq(expected.as_bytes(), p.signature.as_bytes()) {
            return Ok(p.access_key);
        }
    }
    Err(AwsError::Auth(
        AuthFailure::BadSignature,
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.".into(),
    ))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn signing_key_matches_the_aws_documentation_example() {
        // From the AWS SigV4 documentation ("Examples of how to derive a signing key").
        let k = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam");
        assert_eq!(hex::encode(k), "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
    }

    #[test]
    fn amz_dates_convert_to_epoch() {
        assert_eq!(epoch_of("19700101T000000Z"), Some(0));
        assert_eq!(epoch_of("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(epoch_of("2015-08-30"), None);
    }

    /// Signs like an SDK (header auth), then checks that verification accepts it and
    /// refuses a changed body or a wrong secret.
    #[test]
    fn header_signatures_verify_and_tampering_fails() {
        let mut creds = BTreeMap::new();
        creds.insert("AKID".to_string(), "secret".to_string());
        let body = br#"{"QueueName":"q"}"#;
        let amz_date = "20250101T000000Z";
        let now = epoch_of(amz_date).unwrap_or(0);
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("localhost:4566"));
        headers.insert("x-amz-date", HeaderValue::from_static("20250101T000000Z"));
        headers.insert("x-amz-target", HeaderValue::from_static("AmazonSQS.CreateQueue"));
        let signed = "host;x-amz-date;x-amz-target";
        let canonical = format!(
            "POST\n/\n\nhost:localhost:4566\nx-amz-date:{amz_date}\nx-amz-target:AmazonSQS.CreateQueue\n\n{signed}\n{}",
            hex::encode(Sha256::digest(body))
        );
        let scope = "20250101/us-east-1/sqs/aws4_request";
        let to_sign =
            format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex::encode(Sha256::digest(canonical.as_bytes())));
        let sig = hex::encode(hmac_sha256(&signing_key("secret", "20250101", "us-east-1", "sqs"), to_sign.as_bytes()));
        let auth = format!("AWS4-HMAC-SHA256 Credential=AKID/{scope}, SignedHeaders={signed}, Signature={sig}");
        headers.insert("authorization", HeaderValue::from_str(&auth).expect("header"));
        let uri: Uri = "/".parse().expect("uri");
        let req = Request { method: &Method::POST, uri: &uri, headers: &headers, body };
        assert_eq!(verify(&req, &creds, now).ok().as_deref(), Some("AKID"));
        let tampered = Request { body: br#"{"QueueName":"r"}"#, ..req };
        assert!(matches!(verify(&tampered, &creds, now), Err(AwsError::Auth(AuthFailure::BadSignature, _))));
        let req = Request { method: &Method::POST, uri: &uri, headers: &headers, body };
        assert!(matches!(verify(&req, &creds, now + 3600), Err(AwsError::Auth(AuthFailure::Expired, _))));
        creds.insert("AKID".to_string(), "other".to_string());
        assert!(matches!(verify(&req, &creds, now), Err(AwsError::Auth(AuthFailure::BadSignature, _))));
        assert!(matches!(verify(&req, &BTreeMap::new(), now), Err(AwsError::Auth(AuthFailure::UnknownKey, _))));
        let empty = HeaderMap::new();
        let req = Request { method: &Method::POST, uri: &uri, headers: &empty, body };
        assert!(matches!(verify(&req, &creds, now), Err(AwsError::Auth(AuthFailure::Missing, _))));
    }
}
