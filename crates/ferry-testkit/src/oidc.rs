//! ID tokens signed like Google's, for tests of push authentication: a throwaway RSA key made
//! with the `openssl` command for each signer, its JWKS, and RS256 tokens.

use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine;
use serde_json::{json, Value};

use crate::unique;

/// Signs ID tokens like Google's, with a throwaway RSA key generated for the test.
pub struct TokenSigner {
    pub key: ring::signature::RsaKeyPair,
    pub kid: String,
}

impl TokenSigner {
    pub fn new(dir: &Path) -> Self {
        let pem = dir.join(format!("{}.pem", unique("key")));
        let path = pem.with_extension("der");
        // `genpkey -outform DER` writes the PKCS#1 form; ring wants PKCS#8.
        let ok = Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
            .arg(&pem)
            .stderr(Stdio::null())
            .status()
            .expect("openssl")
            .success()
            && Command::new("openssl")
                .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
                .arg(&pem)
                .arg("-out")
                .arg(&path)
                .status()
                .expect("openssl")
                .success();
        assert!(ok, "openssl made a key");
        let key = ring::signature::RsaKeyPair::from_pkcs8(&std::fs::read(&path).unwrap()).expect("PKCS#8 RSA key");
        Self { key, kid: unique("kid") }
    }

    pub fn jwks(&self) -> Value {
        let c: ring::signature::RsaPublicKeyComponents<Vec<u8>> = self.key.public().into();
        let b = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        json!({"keys": [{"kid": self.kid, "kty": "RSA", "alg": "RS256", "use": "sig", "n": b(&c.n), "e": b(&c.e)}]})
    }

    pub fn token(&self, claims: &Value) -> String {
        let b = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let signing_input = format!("{}.{}", b(&json!({"alg": "RS256", "kid": self.kid, "typ": "JWT"})), b(claims));
        let mut sig = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(&ring::signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), signing_input.as_bytes(), &mut sig)
            .expect("sign");
        format!("{signing_input}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig))
    }
}
