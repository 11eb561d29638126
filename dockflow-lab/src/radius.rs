//! RADIUS (RFC 2865) Access-Request / Access-Accept / Access-Reject, just enough for the lab:
//! User-Name, User-Password (hidden with the shared secret), Reply-Message, and both
//! authenticators.

use anyhow::{Result, bail, ensure};
use md5::{Digest as _, Md5};

pub const ACCESS_REQUEST: u8 = 1;
pub const ACCESS_ACCEPT: u8 = 2;
pub const ACCESS_REJECT: u8 = 3;

pub const USER_NAME: u8 = 1;
pub const USER_PASSWORD: u8 = 2;
pub const REPLY_MESSAGE: u8 = 18;
pub const NAS_IDENTIFIER: u8 = 32;

const HEADER_LEN: usize = 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub code: u8,
    pub identifier: u8,
    pub authenticator: [u8; 16],
    pub attributes: Vec<(u8, Vec<u8>)>,
}

impl Packet {
    pub fn attribute(&self, attr_type: u8) -> Option<&[u8]> {
        self.attributes
            .iter()
            .find(|(t, _)| *t == attr_type)
            .map(|(_, v)| v.as_slice())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.code, self.identifier, 0, 0];
        out.extend_from_slice(&self.authenticator);
        for (attr_type, value) in &self.attributes {
            out.push(*attr_type);
            out.push((value.len() + 2) as u8);
            out.extend_from_slice(value);
        }
        let len = out.len() as u16;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        ensure!(
            bytes.len() >= HEADER_LEN,
            "RADIUS packet of {} bytes is too short",
            bytes.len()
        );
        let len = u16::from_be_bytes([bytes[2], bytes[3]]) as usize;
        ensure!(
            (HEADER_LEN..=bytes.len()).contains(&len),
            "RADIUS length field {len} is invalid"
        );
        let mut attributes = Vec::new();
        let mut rest = &bytes[HEADER_LEN..len];
        while !rest.is_empty() {
            ensure!(rest.len() >= 2, "truncated RADIUS attribute");
            let attr_len = rest[1] as usize;
            if attr_len < 2 || attr_len > rest.len() {
                bail!("RADIUS attribute {} has invalid length {attr_len}", rest[0]);
            }
            attributes.push((rest[0], rest[2..attr_len].to_vec()));
            rest = &rest[attr_len..];
        }
        Ok(Self {
            code: bytes[0],
            identifier: bytes[1],
            authenticator: bytes[4..20].try_into().unwrap(),
            attributes,
        })
    }
}

/// Builds an Access-Request for `user`/`password` with a fresh request authenticator.
pub fn access_request(
    identifier: u8,
    authenticator: [u8; 16],
    user: &str,
    password: &str,
    secret: &[u8],
) -> Packet {
    Packet {
        code: ACCESS_REQUEST,
        identifier,
        authenticator,
        attributes: vec![
            (USER_NAME, user.as_bytes().to_vec()),
            (
                USER_PASSWORD,
                hide_password(password.as_bytes(), secret, &authenticator),
            ),
            (NAS_IDENTIFIER, b"dockflow-lab".to_vec()),
        ],
    }
}

/// Answers an Access-Request: Accept when the hidden password matches, Reject otherwise.
pub fn answer(request: &Packet, secret: &[u8], user: &str, password: &str) -> Result<Packet> {
    ensure!(
        request.code == ACCESS_REQUEST,
        "not an Access-Request (code {})",
        request.code
    );
    let given_user = request.attribute(USER_NAME).unwrap_or_default();
    let given_password = request
        .attribute(USER_PASSWORD)
        .map(|hidden| unhide_password(hidden, secret, &request.authenticator))
        .unwrap_or_default();
    let accepted = given_user == user.as_bytes() && given_password == password.as_bytes();
    let (code, message) = if accepted {
        (ACCESS_ACCEPT, format!("Welcome, {user}"))
    } else {
        (ACCESS_REJECT, "Authentication failed".to_string())
    };
    let mut reply = Packet {
        code,
        identifier: request.identifier,
        authenticator: request.authenticator,
        attributes: vec![(REPLY_MESSAGE, message.into_bytes())],
    };
    reply.authenticator = response_authenticator(&reply, &request.authenticator, secret);
    Ok(reply)
}

/// Checks a reply against the request it answers; a wrong shared secret fails here.
pub fn verify_reply(reply: &Packet, request: &Packet, secret: &[u8]) -> Result<()> {
    ensure!(
        reply.identifier == request.identifier,
        "reply identifier {} does not match request {}",
        reply.identifier,
        request.identifier
    );
    ensure!(
        reply.authenticator == response_authenticator(reply, &request.authenticator, secret),
        "reply authenticator is wrong (shared secret mismatch?)"
    );
    Ok(())
}

/// MD5(Code + ID + Length + RequestAuth + Attributes + Secret), RFC 2865 section 3.
fn response_authenticator(
    reply: &Packet,
    request_authenticator: &[u8; 16],
    secret: &[u8],
) -> [u8; 16] {
    let mut bytes = Packet {
        authenticator: *request_authenticator,
        ..reply.clone()
    }
    .encode();
    bytes.extend_from_slice(secret);
    Md5::digest(&bytes).into()
}

/// RFC 2865 section 5.2: c(i) = p(i) xor MD5(S + c(i-1)), c(0) = the request authenticator.
fn hide_password(password: &[u8], secret: &[u8], authenticator: &[u8; 16]) -> Vec<u8> {
    let mut padded = password.to_vec();
    padded.resize(password.len().div_ceil(16).max(1) * 16, 0);
    let mut out = Vec::with_capacity(padded.len());
    let mut previous = authenticator.to_vec();
    for chunk in padded.chunks(16) {
        let key = Md5::new()
            .chain_update(secret)
            .chain_update(&previous)
            .finalize();
        let block: Vec<u8> = chunk.iter().zip(key.iter()).map(|(p, k)| p ^ k).collect();
        previous = block.clone();
        out.extend(block);
    }
    out
}

fn unhide_password(hidden: &[u8], secret: &[u8], authenticator: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hidden.len());
    let mut previous: &[u8] = authenticator;
    for chunk in hidden.chunks(16) {
        let key = Md5::new()
            .chain_update(secret)
            .chain_update(previous)
            .finalize();
        out.extend(chunk.iter().zip(key.iter()).map(|(c, k)| c ^ k));
        previous = chunk;
    }
    while out.last() == Some(&0) {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"testing123";

    #[test]
    fn rfc2865_password_hiding_round_trips() {
        let auth = [7u8; 16];
        for password in [
            "x",
            "exactly16bytes!!",
            "a password longer than sixteen bytes",
        ] {
            let hidden = hide_password(password.as_bytes(), SECRET, &auth);
            assert_eq!(hidden.len() % 16, 0);
            assert_ne!(
                &hidden[..password.len().min(16)],
                &password.as_bytes()[..password.len().min(16)]
            );
            assert_eq!(unhide_password(&hidden, SECRET, &auth), password.as_bytes());
        }
    }

    #[test]
    fn accepts_the_right_password_and_signs_the_reply() {
        let request = access_request(42, [3u8; 16], "dockflow", "radius-demo", SECRET);
        let decoded = Packet::decode(&request.encode()).unwrap();
        assert_eq!(decoded, request);
        let reply = answer(&decoded, SECRET, "dockflow", "radius-demo").unwrap();
        assert_eq!(reply.code, ACCESS_ACCEPT);
        verify_reply(&Packet::decode(&reply.encode()).unwrap(), &request, SECRET).unwrap();
        assert!(verify_reply(&reply, &request, b"other-secret").is_err());
    }

    #[test]
    fn rejects_a_wrong_password() {
        let request = access_request(1, [9u8; 16], "dockflow", "guess", SECRET);
        assert_eq!(
            answer(&request, SECRET, "dockflow", "radius-demo")
                .unwrap()
                .code,
            ACCESS_REJECT
        );
    }

    #[test]
    fn refuses_malformed_packets() {
        assert!(Packet::decode(&[1, 2, 0]).is_err());
        let mut bytes = access_request(1, [0u8; 16], "u", "p", SECRET).encode();
        bytes[21] = 200; // first attribute's length runs past the end
        assert!(Packet::decode(&bytes).is_err());
    }
}
