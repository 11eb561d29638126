//! Kernel type information from BTF: struct member offsets for the programs (Rust eBPF has no
//! CO-RE) and enum value names (drop reasons) for decoding.

use std::{collections::HashMap, path::Path};

use anyhow::{Context as _, Result, anyhow, bail};
use btf_rs::{Btf, Type};

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";
const MODULES_DIR: &str = "/sys/kernel/btf";

/// The kernel's BTF: vmlinux plus the split BTF of the modules dockflow reads structs from.
pub struct KernelBtf {
    objects: Vec<Btf>,
}

impl KernelBtf {
    /// Loads vmlinux BTF and the BTF of `modules` that are loaded (nf_conntrack is a module on
    /// most distributions; built in here and there).
    pub fn load(modules: &[&str]) -> Result<Self> {
        if !Path::new(VMLINUX).exists() {
            bail!(
                "this kernel has no BTF ({VMLINUX} is missing); dockflow needs CONFIG_DEBUG_INFO_BTF=y"
            );
        }
        let base = Btf::from_file(VMLINUX).map_err(|e| anyhow!("parsing {VMLINUX}: {e}"))?;
        let mut objects = Vec::new();
        for module in modules {
            let path = Path::new(MODULES_DIR).join(module);
            if path.exists() {
                objects.push(
                    Btf::from_split_file(&path, &base)
                        .map_err(|e| anyhow!("parsing {}: {e}", path.display()))?,
                );
            }
        }
        objects.insert(0, base);
        Ok(Self { objects })
    }

    fn find_struct(&self, name: &str) -> Option<(&Btf, btf_rs::Struct)> {
        self.objects.iter().find_map(|btf| {
            btf.resolve_types_by_name(name)
                .ok()?
                .into_iter()
                .find_map(|t| match t {
                    Type::Struct(s) if !s.members.is_empty() => Some((btf, s)),
                    _ => None,
                })
        })
    }

    /// sizeof(struct name).
    pub fn size(&self, name: &str) -> Result<u32> {
        let (_, s) = self
            .find_struct(name)
            .with_context(|| format!("struct {name} not in the kernel's BTF"))?;
        Ok(s.size() as u32)
    }

    /// Whether `struct name` is described anywhere (a module that is not loaded is not).
    pub fn has_struct(&self, name: &str) -> bool {
        self.find_struct(name).is_some()
    }

    /// Byte offset of `path` ("a.b.c") inside `struct name`, looking through anonymous
    /// structs and unions the way C member access does.
    pub fn offset(&self, name: &str, path: &str) -> Result<u32> {
        let (btf, strukt) = self
            .find_struct(name)
            .with_context(|| format!("struct {name} not in the kernel's BTF"))?;
        let mut current = strukt;
        let mut bits = 0u32;
        for field in path.split('.') {
            let (offset, next) = find_member(btf, &current, field)
                .with_context(|| format!("struct {name} has no member {path}"))?;
            bits += offset;
            match next {
                Some(next) => current = next,
                None if field == path.rsplit('.').next().unwrap() => {}
                None => bail!("{name}.{path}: {field} is not a struct"),
            }
        }
        if !bits.is_multiple_of(8) {
            bail!("{name}.{path} is a bitfield");
        }
        Ok(bits / 8)
    }

    /// Name of every value of `enum name` (e.g. skb_drop_reason).
    pub fn enum_names(&self, name: &str) -> Result<HashMap<u32, String>> {
        for btf in &self.objects {
            for t in btf.resolve_types_by_name(name).unwrap_or_default() {
                if let Type::Enum(e) = t {
                    return e
                        .members
                        .iter()
                        .map(|m| Ok((m.val(), btf.resolve_name(m).map_err(|e| anyhow!("{e}"))?)))
                        .collect();
                }
            }
        }
        bail!("enum {name} not in the kernel's BTF")
    }
}

/// Finds `field` among the members of `strukt`, descending into anonymous members. Returns its
/// bit offset and, when it is itself a struct/union, that type for further descent.
fn find_member(
    btf: &Btf,
    strukt: &btf_rs::Struct,
    field: &str,
) -> Option<(u32, Option<btf_rs::Struct>)> {
    for member in &strukt.members {
        let name = btf.resolve_name(member).unwrap_or_default();
        let ty = resolve_aggregate(btf, member);
        if name == field {
            return Some((member.bit_offset(), ty));
        }
        if name.is_empty()
            && let Some(inner) = ty.as_ref().and_then(|t| find_member(btf, t, field))
        {
            return Some((member.bit_offset() + inner.0, inner.1));
        }
    }
    None
}

/// The struct or union a member's type resolves to, through typedefs and qualifiers.
fn resolve_aggregate(btf: &Btf, member: &btf_rs::Member) -> Option<btf_rs::Struct> {
    let mut ty = btf.resolve_chained_type(member).ok()?;
    loop {
        match ty {
            Type::Struct(s) | Type::Union(s) => return Some(s),
            Type::Typedef(ref t) => ty = btf.resolve_chained_type(t).ok()?,
            Type::Const(ref t) | Type::Volatile(ref t) => ty = btf.resolve_chained_type(t).ok()?,
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The running kernel's BTF is the fixture: these are facts any BTF kernel agrees on.
    #[test]
    fn resolves_sk_buff_members_through_anonymous_unions() {
        let btf = KernelBtf::load(&[]).unwrap();
        let head = btf.offset("sk_buff", "head").unwrap();
        let dev = btf.offset("sk_buff", "dev").unwrap();
        assert!(
            head > dev,
            "head ({head}) comes after dev ({dev}) in every layout"
        );
        assert_eq!(btf.offset("nf_hook_state", "hook").unwrap(), 0);
        assert_eq!(btf.offset("nf_hook_state", "pf").unwrap(), 1);
        assert!(btf.offset("sk_buff", "no_such_member").is_err());
    }

    #[test]
    fn names_drop_reasons() {
        let btf = KernelBtf::load(&[]).unwrap();
        let names = btf.enum_names("skb_drop_reason").unwrap();
        assert!(
            names
                .values()
                .any(|n| n == "SKB_DROP_REASON_NETFILTER_DROP"),
            "{names:?}"
        );
    }
}
