//! The two bpf(2) commands aya 0.14 cannot issue for netfilter programs: BPF_PROG_LOAD with
//! BPF_PROG_TYPE_NETFILTER, and BPF_LINK_CREATE with the netfilter attach options.

use std::{
    ffi::CString,
    io,
    os::fd::{FromRawFd as _, OwnedFd},
};

use aya_obj::generated::{
    bpf_attach_type::BPF_NETFILTER, bpf_attr, bpf_attr__bindgen_ty_14__bindgen_ty_3__bindgen_ty_5,
    bpf_cmd, bpf_insn, bpf_prog_type::BPF_PROG_TYPE_NETFILTER,
};

/// An all-zero bpf_attr: the kernel wants every byte past the command's own fields zero.
fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is a C union of integers; all zeroes is a valid value of each member.
    unsafe { std::mem::zeroed() }
}

fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid, exclusively borrowed bpf_attr of the size passed, and every pointer the caller put in it outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fd was just returned by the kernel, checked non-negative, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Loads `insns` as a netfilter program; on refusal the error carries the verifier's last words.
pub fn load_netfilter_program(
    name: &str,
    insns: &[bpf_insn],
    license: &CString,
) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    // SAFETY: writing plain integers into the BPF_PROG_LOAD member of a zeroed union.
    let load = unsafe { &mut attr.__bindgen_anon_3 };
    load.prog_type = BPF_PROG_TYPE_NETFILTER as u32;
    load.insn_cnt = insns.len() as u32;
    load.insns = insns.as_ptr() as u64;
    load.license = license.as_ptr() as u64;
    load.expected_attach_type = BPF_NETFILTER as u32;
    for (to, from) in load.prog_name.iter_mut().zip(name.bytes().take(15)) {
        *to = from as libc::c_char;
    }
    match bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            // Retry with the verifier log so the error says why.
            let mut log = vec![0u8; 1 << 20];
            // SAFETY: as above.
            let load = unsafe { &mut attr.__bindgen_anon_3 };
            load.log_level = 1;
            load.log_size = log.len() as u32;
            load.log_buf = log.as_mut_ptr() as u64;
            bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr).map_err(|retry| {
                // A full log means the verifier went on and on: the program is too complex
                // for it, and the log's last line is some state, not the reason.
                let log_full = log.iter().rposition(|b| *b != 0).unwrap_or(0) + 2 >= log.len();
                if retry.raw_os_error() == Some(libc::ENOSPC) || log_full {
                    return io::Error::new(
                        first.kind(),
                        format!("{first}: the verifier gave up on it (too many states to check)"),
                    );
                }
                let text = String::from_utf8_lossy(&log);
                let last = text
                    .trim_end_matches('\0')
                    .lines()
                    .rev()
                    // The last lines are statistics; the reason comes before them.
                    .find(|l| {
                        let l = l.trim();
                        !l.is_empty()
                            && !l.starts_with("processed ")
                            && !l.starts_with("verification time")
                            && !l.starts_with("stack depth")
                    })
                    .unwrap_or("")
                    .to_string();
                io::Error::new(
                    first.kind(),
                    if last.is_empty() {
                        first.to_string()
                    } else {
                        format!("{first}: verifier: {last}")
                    },
                )
            })
        }
    }
}

/// Attaches a netfilter program to (family, hook, priority); the link lives as long as the fd.
pub fn attach_netfilter(prog: &OwnedFd, pf: u8, hook: u8, priority: i32) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd as _;
    let mut attr = zeroed_attr();
    // SAFETY: writing plain integers into the BPF_LINK_CREATE member of a zeroed union.
    let link = unsafe { &mut attr.link_create };
    link.__bindgen_anon_1.prog_fd = prog.as_raw_fd() as u32;
    link.attach_type = BPF_NETFILTER as u32;
    link.__bindgen_anon_3.netfilter = bpf_attr__bindgen_ty_14__bindgen_ty_3__bindgen_ty_5 {
        pf: pf.into(),
        hooknum: hook.into(),
        priority,
        flags: 0,
    };
    bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr)
}
