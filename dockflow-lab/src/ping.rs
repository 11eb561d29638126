//! One ICMP echo request and its reply, over a raw socket (the lab image has no ping).

use std::{io, mem, net::Ipv4Addr, time::Duration};

use anyhow::{Context as _, Result, bail};

const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;

/// Sends one echo request to `target` and waits up to 3 s for its reply.
pub fn ping(target: Ipv4Addr) -> Result<String> {
    let socket = RawIcmp::open().context("opening a raw ICMP socket (root needed)")?;
    let id = (std::process::id() & 0xffff) as u16;
    socket.send_to(&echo_request(id, 1), target)?;
    let mut buf = [0u8; 1500];
    loop {
        let n = socket
            .recv(&mut buf)
            .with_context(|| format!("no ICMP echo reply from {target} within 3 s"))?;
        // A raw IPv4 socket receives the IP header too.
        let header_len = usize::from(buf[0] & 0x0f) * 4;
        let icmp = &buf[header_len.min(n)..n];
        let from = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
        if icmp.len() >= 8
            && icmp[0] == ICMP_ECHO_REPLY
            && u16::from_be_bytes([icmp[4], icmp[5]]) == id
            && from == target
        {
            return Ok(format!("echo reply from {target}"));
        }
    }
}

fn echo_request(id: u16, sequence: u16) -> Vec<u8> {
    let mut packet = vec![ICMP_ECHO_REQUEST, 0, 0, 0];
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&sequence.to_be_bytes());
    packet.extend_from_slice(b"dockflow-lab ping");
    let sum = checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    packet
}

/// The Internet checksum (RFC 1071).
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

struct RawIcmp(std::os::fd::OwnedFd);

impl RawIcmp {
    fn open() -> io::Result<Self> {
        use std::os::fd::{AsRawFd as _, FromRawFd as _};
        // SAFETY: socket takes plain integers and touches no memory.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMP,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the fd was just returned by the kernel, checked non-negative, and nothing else owns it.
        let socket = Self(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
        let timeout = libc::timeval {
            tv_sec: Duration::from_secs(3).as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: the option value points to a live local of the size passed, and the fd is open (owned by self).
        let rc = unsafe {
            libc::setsockopt(
                socket.0.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                mem::size_of::<libc::timeval>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(socket)
    }

    fn send_to(&self, packet: &[u8], target: Ipv4Addr) -> Result<()> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: a plain C struct of integers, for which all zeroes is a valid value.
        let mut address: libc::sockaddr_in = unsafe { mem::zeroed() };
        address.sin_family = libc::AF_INET as u16;
        address.sin_addr.s_addr = u32::from_ne_bytes(target.octets());
        // SAFETY: the message and the address are live buffers of the lengths passed, and the fd is open (owned by self).
        let sent = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const address).cast(),
                mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if sent < 0 {
            bail!("sending to {target}: {}", io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: `buf` is valid and writable for `buf.len()` bytes, and the fd is open (owned by self).
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_packet_with_its_checksum_sums_to_zero() {
        let packet = super::echo_request(0x1234, 7);
        assert_eq!(super::checksum(&packet), 0);
    }
}
