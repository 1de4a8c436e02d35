//! Hello authentication: JSON Web Tokens signed with HS256 by the game backend.
//!
//! The backend, which already knows who the player is, signs `{"sub": "<uid>", "exp": <unix seconds>}` with a
//! secret it shares with the group servers (`server.authSecret`) and hands the token to the game client,
//! which sends it in Hello. The server checks the signature, that the token has not expired, that it is
//! already valid (`nbf`, when present), and that `sub` is the uid in the Hello, allowing
//! `server.authClockSkew` (default 5 s) between the backend's clock and its own. Any JWT library mints
//! such tokens; in Rust, [`mint_token`] does.
//!
//! A refused client learns only which of these failed ("invalid token", "token expired", ...); the
//! parser's details go to the server's log, not to an unauthenticated peer.
//!
//! Without a secret, every Hello is accepted and the server logs one warning at start.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The claims a token must carry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The uid the token is for.
    pub sub: String,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before this time (seconds since the Unix epoch), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

/// Why a token was refused. The server logs this text; the client gets Bad AUTH_FAILED with
/// [`AuthError::client_message`], and the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Not a JWT, a bad signature, another algorithm, or missing claims.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token's `exp` has passed: the client should fetch a fresh token from the backend.
    #[error("token expired")]
    Expired,
    /// The token's `nbf` is still in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// The token is for another uid.
    #[error("token is for another uid")]
    WrongUid,
}

impl AuthError {
    /// What the client is told: which check failed, without the parser's details.
    pub fn client_message(&self) -> &'static str {
        match self {
            AuthError::Invalid(_) => "invalid token",
            AuthError::Expired => "token expired",
            AuthError::NotYetValid => "token not yet valid",
            AuthError::WrongUid => "token is for another uid",
        }
    }
}

/// The default allowance between the backend's clock and the server's (`server.authClockSkew`).
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(5);

/// Verifies Hello tokens against one HS256 secret.
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenVerifier(HS256)")
    }
}

impl TokenVerifier {
    /// A verifier for tokens signed with `secret`, allowing [`DEFAULT_CLOCK_SKEW`].
    pub fn new(secret: &[u8]) -> Self {
        TokenVerifier::with_clock_skew(secret, DEFAULT_CLOCK_SKEW)
    }

    /// A verifier for tokens signed with `secret`, allowing `skew` on `exp` and `nbf`.
    pub fn with_clock_skew(secret: &[u8], skew: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = skew.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        TokenVerifier {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Checks `token` for `uid`.
    pub fn verify(&self, token: &[u8], uid: &str) -> Result<(), AuthError> {
        let token =
            std::str::from_utf8(token).map_err(|_| AuthError::Invalid("not UTF-8".into()))?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                _ => AuthError::Invalid(e.to_string()),
            },
        )?;
        if data.claims.sub != uid {
            return Err(AuthError::WrongUid);
        }
        Ok(())
    }
}

/// Mints a token for `uid` valid for `ttl` from now: what a game backend written in Rust does.
pub fn mint_token(secret: &[u8], uid: &str, ttl: Duration) -> String {
    let exp = SystemTime::now().checked_add(ttl).unwrap_or(UNIX_EPOCH);
    let exp = exp.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    mint_token_with(
        secret,
        &Claims {
            sub: uid.into(),
            exp,
            nbf: None,
        },
    )
}

/// Mints a token with explicit claims (tests use it for expired tokens).
pub fn mint_token_with(secret: &[u8], claims: &Claims) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef-test-secret";

    #[test]
    fn valid_token_passes_and_every_bad_one_is_refused() {
        let verifier = TokenVerifier::new(SECRET);
        let good = mint_token(SECRET, "alice", Duration::from_secs(60));
        assert_eq!(verifier.verify(good.as_bytes(), "alice"), Ok(()));
        assert_eq!(
            verifier.verify(good.as_bytes(), "bob"),
            Err(AuthError::WrongUid)
        );
        let expired = mint_token_with(
            SECRET,
            &Claims {
                sub: "alice".into(),
                exp: 1_000,
                nbf: None,
            },
        );
        assert_eq!(
            verifier.verify(expired.as_bytes(), "alice"),
            Err(AuthError::Expired)
        );
        let forged = mint_token(
            b"another-secret-of-some-length",
            "alice",
            Duration::from_secs(60),
        );
        assert!(matches!(
            verifier.verify(forged.as_bytes(), "alice"),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            verifier.verify(b"garbage", "alice"),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            verifier.verify(&[0xFF, 0xFE], "alice"),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            verifier.verify(b"", "alice"),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn nbf_is_honoured_within_the_clock_skew_and_clients_get_no_parser_details() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let starting_in = |seconds: u64| {
            mint_token_with(
                SECRET,
                &Claims {
                    sub: "alice".into(),
                    exp: now + 3600,
                    nbf: Some(now + seconds),
                },
            )
        };
        let verifier = TokenVerifier::with_clock_skew(SECRET, Duration::from_secs(5));
        assert_eq!(
            verifier.verify(starting_in(60).as_bytes(), "alice"),
            Err(AuthError::NotYetValid)
        );
        assert_eq!(
            verifier.verify(starting_in(2).as_bytes(), "alice"),
            Ok(()),
            "within the skew"
        );
        let strict = TokenVerifier::with_clock_skew(SECRET, Duration::ZERO);
        assert_eq!(
            strict.verify(starting_in(2).as_bytes(), "alice"),
            Err(AuthError::NotYetValid)
        );
        let Err(garbage) = verifier.verify(b"not.a.jwt", "alice") else {
            panic!("garbage accepted")
        };
        assert!(
            garbage.to_string().len() > "invalid token".len(),
            "the log gets details"
        );
        assert_eq!(
            garbage.client_message(),
            "invalid token",
            "the client does not"
        );
    }
}
