//! Tracepoint record layouts from tracefs `format` files (the kernel's own description).

use std::{collections::HashMap, path::PathBuf};

use anyhow::{Context as _, Result, anyhow};

const TRACEFS_ROOTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

pub struct TracepointFormat {
    name: String,
    offsets: HashMap<String, u32>,
}

impl TracepointFormat {
    pub fn read(category: &str, name: &str) -> Result<Self> {
        let path = TRACEFS_ROOTS
            .iter()
            .map(|root| PathBuf::from(root).join("events").join(category).join(name).join("format"))
            .find(|p| p.exists())
            .with_context(|| format!("tracepoint {category}:{name} not found (is tracefs mounted at /sys/kernel/tracing?)"))?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(Self {
            name: format!("{category}:{name}"),
            offsets: parse(&text),
        })
    }

    pub fn field_offset(&self, field: &str) -> Result<u32> {
        self.offsets
            .get(field)
            .copied()
            .ok_or_else(|| anyhow!("tracepoint {} has no field {field}", self.name))
    }
}

/// Parses lines like `field:void * skbaddr; offset:8; size:8; signed:0;` (tab-separated).
fn parse(text: &str) -> HashMap<String, u32> {
    text.lines()
        .filter_map(|line| {
            let decl = line.trim().strip_prefix("field:")?.split(';').next()?;
            let name = decl
                .split_whitespace()
                .last()?
                .split('[')
                .next()?
                .to_string();
            let offset = line
                .split("offset:")
                .nth(1)?
                .split(';')
                .next()?
                .trim()
                .parse()
                .ok()?;
            Some((name, offset))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kfree_skb_format() {
        let text = "name: kfree_skb\nID: 1\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:enum skb_drop_reason reason;\toffset:28;\tsize:4;\tsigned:0;\n\tfield:char name[16];\toffset:32;\tsize:16;\tsigned:0;\n";
        let f = parse(text);
        assert_eq!(f["skbaddr"], 8);
        assert_eq!(f["reason"], 28);
        assert_eq!(f["name"], 32);
        assert_eq!(f["common_type"], 0);
    }
}
