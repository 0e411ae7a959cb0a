//! SNS message signatures: an RSA key generated at start-up, a self-signed X.509
//! certificate for it (served at the `SigningCertURL`), and the two signature versions —
//! `1` (SHA1withRSA) and `2` (SHA256withRSA), PKCS#1 v1.5 over SNS's string to sign.
//!
//! The key is 2048 bits, as AWS's. It is made once per process, on a blocking thread at
//! start-up (see [`Signer::warm_up`]); a signature asked for before that waits for it.

use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rsa::PrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::EncodePublicKey;
use rsa::signature::{SignatureEncoding, Signer as _};
use x509_cert::builder::{Builder, CertificateBuilder, profile};
use x509_cert::der::EncodePem;
use x509_cert::der::pem::LineEnding;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::Validity;

/// The modulus size of the signing key (AWS's).
const KEY_BITS: usize = 2048;

/// The key pair and its certificate.
struct Keys {
    sha1: SigningKey<sha1::Sha1>,
    sha256: SigningKey<rsa::sha2::Sha256>,
    cert_pem: String,
}

/// Signs SNS messages; cheap to clone.
#[derive(Clone, Default)]
pub struct Signer {
    keys: Arc<OnceLock<Result<Keys, String>>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("ready", &self.keys.get().is_some()).finish()
    }
}

fn make_keys() -> Result<Keys, String> {
    let started = std::time::Instant::now();
    let mut rng = getrandom::SysRng;
    let key = PrivateKey::new(&mut rng, KEY_BITS).map_err(|e| format!("RSA key generation: {e}"))?;
    let sha256 = SigningKey::<rsa::sha2::Sha256>::new(key.clone());
    let sha1 = SigningKey::<sha1::Sha1>::new(key.clone());
    let spki_der = key.to_public_key().to_public_key_der().map_err(|e| format!("public key: {e}"))?;
    let spki = SubjectPublicKeyInfoOwned::try_from(spki_der.as_bytes()).map_err(|e| format!("public key: {e}"))?;
    let subject = Name::from_str("CN=sns.switchyard.local,O=Switchyard,C=US").map_err(|e| format!("name: {e}"))?;
    let profile = profile::cabf::Root::new(false, subject).map_err(|e| format!("profile: {e}"))?;
    let validity =
        Validity::from_now(Duration::from_secs(10 * 365 * 24 * 3600)).map_err(|e| format!("validity: {e}"))?;
    let serial = SerialNumber::from(u32::from_be_bytes(rand::random()) >> 1);
    let builder = CertificateBuilder::new(profile, serial, validity, spki).map_err(|e| format!("certificate: {e}"))?;
    let cert = builder.build::<_, rsa::pkcs1v15::Signature>(&sha256).map_err(|e| format!("certificate: {e}"))?;
    let cert_pem = cert.to_pem(LineEnding::LF).map_err(|e| format!("certificate PEM: {e}"))?;
    tracing::info!(took_ms = started.elapsed().as_millis() as u64, "SNS signing key ready");
    Ok(Keys { sha1, sha256, cert_pem })
}

impl Signer {
    /// Makes the key on a blocking thread now, so the first publish does not wait for it.
    pub fn warm_up(&self) {
        let keys = Arc::clone(&self.keys);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = keys.get_or_init(make_keys) {
                tracing::error!(error = %e, "SNS signing key unavailable; messages go out unsigned");
            }
        });
    }

    fn keys(&self) -> Option<&Keys> {
        self.keys.get_or_init(make_keys).as_ref().ok()
    }

    /// The signing certificate, PEM-encoded.
    pub fn certificate_pem(&self) -> Option<String> {
        self.keys().map(|k| k.cert_pem.clone())
    }

    /// The base64 signature of `text` for SignatureVersion `version` (`"1"` SHA1, else SHA256);
    /// empty if the key could not be made.
    pub fn sign(&self, version: &str, text: &str) -> String {
        let Some(keys) = self.keys() else { return String::new() };
        let sig = if version == "1" {
            keys.sha1.try_sign(text.as_bytes()).map(|s| s.to_vec())
        } else {
            keys.sha256.try_sign(text.as_bytes()).map(|s| s.to_vec())
        };
        match sig {
            Ok(bytes) => STANDARD.encode(bytes),
            Err(e) => {
                tracing::error!(error = %e, "signing an SNS message failed");
                String::new()
            }
        }
    }
}

/// SNS's string to sign: `Name\nValue\n` for each of `fields` present, in the given order
/// (the caller passes the names SNS signs for the message type, alphabetically).
pub fn string_to_sign(fields: &[(&str, Option<&str>)]) -> String {
    let mut out = String::new();
    for (name, value) in fields {
        if let Some(v) = value {
            out.push_str(name);
            out.push('\n');
            out.push_str(v);
            out.push('\n');
        }
    }
    out
}
