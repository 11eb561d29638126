//! Asking conntrack (over ctnetlink) whether a connection still exists, by one of its tuples.

use std::io;

use dockflow_common::{AF_INET, CtTuple};

use crate::netlink::{self, NLMSG_HDRLEN, NetlinkSocket};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

/// A ctnetlink socket in dockflow's own (the host's) network namespace.
pub struct Conntrack(NetlinkSocket);

impl Conntrack {
    pub fn open() -> io::Result<Self> {
        NetlinkSocket::open(libc::NETLINK_NETFILTER).map(Self)
    }

    /// Whether conntrack has a connection with this tuple in its reply direction (`reply`) or
    /// its original one.
    pub fn has_connection(&self, tuple: &CtTuple, reply: bool) -> io::Result<bool> {
        self.0.send(&get_request(tuple, reply))?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = self.0.recv(&mut buf)?;
            for (msg_type, payload) in netlink::messages(&buf[..n]) {
                if msg_type != NLMSG_ERROR {
                    continue;
                }
                // struct nlmsgerr: the error (0 acknowledges a found entry), then the request.
                let error = payload
                    .get(..4)
                    .map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap()));
                return match -error {
                    0 => Ok(true),
                    libc::ENOENT => Ok(false),
                    errno => Err(io::Error::from_raw_os_error(errno)),
                };
            }
        }
    }
}

/// IPCTNL_MSG_CT_GET for the entry with this tuple (in the reply direction, or the original),
/// acknowledged either way.
fn get_request(tuple: &CtTuple, reply_direction: bool) -> Vec<u8> {
    let v4 = tuple.family == AF_INET;
    let (src, dst, len) = if v4 {
        (CTA_IP_V4_SRC, CTA_IP_V4_DST, 4)
    } else {
        (CTA_IP_V6_SRC, CTA_IP_V6_DST, 16)
    };
    let ip = [
        attribute(src, &tuple.src[..len]),
        attribute(dst, &tuple.dst[..len]),
    ]
    .concat();
    let proto = [
        attribute(CTA_PROTO_NUM, &[tuple.l4_proto]),
        attribute(CTA_PROTO_SRC_PORT, &tuple.sport.to_be_bytes()),
        attribute(CTA_PROTO_DST_PORT, &tuple.dport.to_be_bytes()),
    ]
    .concat();
    let nested = [
        attribute(CTA_TUPLE_IP | NLA_F_NESTED, &ip),
        attribute(CTA_TUPLE_PROTO | NLA_F_NESTED, &proto),
    ]
    .concat();
    let body = [
        // struct nfgenmsg: family, version, res_id.
        vec![tuple.family, 0, 0, 0],
        attribute(
            if reply_direction {
                CTA_TUPLE_REPLY
            } else {
                CTA_TUPLE_ORIG
            } | NLA_F_NESTED,
            &nested,
        ),
    ]
    .concat();
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    let msg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
    let mut msg = Vec::with_capacity(NLMSG_HDRLEN + body.len());
    msg.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&msg_type.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&[0; 8]); // sequence number, port id
    msg.extend_from_slice(&body);
    msg
}

/// One netlink attribute, padded to 4 bytes.
fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut out = Vec::with_capacity(netlink::align4(len));
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(netlink::align4(len), 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v4_request_carries_the_reply_tuple_nested() {
        let reply = CtTuple {
            src: [10, 199, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst: [10, 199, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            sport: 7777,
            dport: 40000,
            l4_proto: 17,
            family: AF_INET,
            _pad: [0; 2],
        };
        let msg = get_request(&reply, true);
        assert_eq!(
            u32::from_ne_bytes(msg[0..4].try_into().unwrap()) as usize,
            msg.len()
        );
        assert_eq!(u16::from_ne_bytes(msg[4..6].try_into().unwrap()), 0x0101);
        let body = &msg[NLMSG_HDRLEN + 4..];
        let (kind, tuple) = netlink::attributes(body).next().unwrap();
        assert_eq!(kind, CTA_TUPLE_REPLY);
        let parts: Vec<_> = netlink::attributes(tuple).collect();
        let ip: Vec<_> = netlink::attributes(parts[0].1).collect();
        assert_eq!(
            ip,
            [
                (CTA_IP_V4_SRC, &[10, 199, 0, 2][..]),
                (CTA_IP_V4_DST, &[10, 199, 0, 1][..])
            ]
        );
        let proto: Vec<_> = netlink::attributes(parts[1].1).collect();
        assert_eq!(proto[0], (CTA_PROTO_NUM, &[17u8][..]));
        assert_eq!(proto[1], (CTA_PROTO_SRC_PORT, &7777u16.to_be_bytes()[..]));
        assert_eq!(proto[2], (CTA_PROTO_DST_PORT, &40000u16.to_be_bytes()[..]));
    }
}
