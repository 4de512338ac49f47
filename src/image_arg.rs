//! `--image AMI` and `--image REGION=AMI` (pure).

use std::collections::BTreeMap;

use crate::config::valid_region;

/// What the user asked to deploy.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImageArgs {
    /// A bare AMI: the image in the worker type's build region (its copies elsewhere are
    /// found by name: a copy carries its source's name).
    pub source: Option<String>,
    /// REGION=AMI entries.
    pub by_region: BTreeMap<String, String>,
}

impl ImageArgs {
    pub fn is_empty(&self) -> bool {
        self.source.is_none() && self.by_region.is_empty()
    }
}

/// `ami-` and 8 or 17 lowercase hex digits, as EC2 makes them.
pub fn valid_ami_id(id: &str) -> bool {
    id.strip_prefix("ami-").is_some_and(|hex| {
        (hex.len() == 8 || hex.len() == 17)
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

pub fn parse_image_args(args: &[String]) -> Result<ImageArgs, String> {
    let mut out = ImageArgs::default();
    for arg in args {
        let (region, ami) = match arg.split_once('=') {
            Some((r, a)) => (Some(r.trim()), a.trim()),
            None => (None, arg.trim()),
        };
        if !valid_ami_id(ami) {
            return Err(format!(
                "--image {arg}: `{ami}` is not an AMI id (ami- and 8 or 17 hex digits)"
            ));
        }
        match region {
            Some(r) if !valid_region(r) => {
                return Err(format!(
                    "--image {arg}: `{r}` is not a region name (like us-east-1)"
                ));
            }
            Some(r) => {
                if out
                    .by_region
                    .insert(r.to_string(), ami.to_string())
                    .is_some()
                {
                    return Err(format!(
                        "--image {arg}: a second image for {r}; give one per region"
                    ));
                }
            }
            None => {
                if out.source.replace(ami.to_string()).is_some() {
                    return Err(format!(
                        "--image {arg}: a second image without a region; give one AMI (the build region's) and REGION=AMI for the others"
                    ));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ImageArgs, String> {
        parse_image_args(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn ami_ids() {
        assert!(valid_ami_id("ami-0123456789abcdef0"));
        assert!(valid_ami_id("ami-0123abcd"));
        assert!(!valid_ami_id("ami-0123ABCD"));
        assert!(!valid_ami_id("ami-123"));
        assert!(!valid_ami_id("i-0123456789abcdef0"));
        assert!(!valid_ami_id("ami-0123456789abcdefg"));
    }

    #[test]
    fn parses_both_forms() {
        let a = parse(&["ami-0123456789abcdef0", "us-east-1=ami-0123abcd"]).unwrap();
        assert_eq!(a.source.as_deref(), Some("ami-0123456789abcdef0"));
        assert_eq!(a.by_region["us-east-1"], "ami-0123abcd");
        assert!(parse(&[]).unwrap().is_empty());
    }

    #[test]
    fn refuses_bad_ones() {
        assert!(
            parse(&["ami-xyz"])
                .unwrap_err()
                .contains("`ami-xyz` is not an AMI id")
        );
        assert!(
            parse(&["Mars=ami-0123abcd"])
                .unwrap_err()
                .contains("`Mars` is not a region name")
        );
        assert!(
            parse(&["us-east-1=ami-0123abcd", "us-east-1=ami-0123abce"])
                .unwrap_err()
                .contains("a second image for us-east-1")
        );
        assert!(
            parse(&["ami-0123abcd", "ami-0123abce"])
                .unwrap_err()
                .contains("a second image without a region")
        );
    }
}
