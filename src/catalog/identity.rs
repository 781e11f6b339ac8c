//! Which Glacier a catalog mirrors: recorded on first use and enforced afterwards, so one
//! cache directory never mixes two accounts, regions or endpoints.

use rusqlite::OptionalExtension;

use super::{Catalog, CatalogError};

/// Which Glacier a catalog mirrors. A catalog is bound to one identity for life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The endpoint URL, or empty for AWS's own endpoint.
    pub endpoint: String,
    pub region: String,
    pub account: String,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let endpoint = if self.endpoint.is_empty() {
            "the AWS endpoint"
        } else {
            &self.endpoint
        };
        write!(
            f,
            "{endpoint} (region {}, account {})",
            self.region, self.account
        )
    }
}

impl Catalog {
    /// Records the identity on first use, and refuses another one afterwards.
    pub fn bind_identity(&self, id: &Identity) -> Result<(), CatalogError> {
        let id = id.clone();
        self.write(move |tx| {
            let get = |k: &str| -> Result<Option<String>, CatalogError> {
                Ok(tx
                    .query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
                    .optional()?)
            };
            match (get("endpoint")?, get("region")?, get("account")?) {
                (Some(endpoint), Some(region), Some(account)) => {
                    let recorded = Identity {
                        endpoint,
                        region,
                        account,
                    };
                    if recorded != id {
                        return Err(CatalogError::WrongIdentity {
                            recorded: recorded.to_string(),
                            requested: id.to_string(),
                        });
                    }
                }
                _ => {
                    for (k, v) in [
                        ("endpoint", &id.endpoint),
                        ("region", &id.region),
                        ("account", &id.account),
                    ] {
                        tx.execute(
                            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                            [k, v.as_str()],
                        )?;
                    }
                }
            }
            Ok(())
        })
    }

    /// The recorded identity, if any.
    pub fn identity(&self) -> Result<Option<Identity>, CatalogError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?;
            let mut get = |k: &str| -> Result<Option<String>, CatalogError> {
                Ok(stmt.query_row([k], |r| r.get(0)).optional()?)
            };
            Ok(match (get("endpoint")?, get("region")?, get("account")?) {
                (Some(endpoint), Some(region), Some(account)) => Some(Identity {
                    endpoint,
                    region,
                    account,
                }),
                _ => None,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(endpoint: &str) -> Identity {
        Identity {
            endpoint: endpoint.into(),
            region: "us-east-1".into(),
            account: "-".into(),
        }
    }

    #[test]
    fn identity_is_recorded_once_and_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(dir.path()).unwrap();
        cat.bind_identity(&id("http://127.0.0.1:1")).unwrap();
        cat.bind_identity(&id("http://127.0.0.1:1")).unwrap();
        let err = cat.bind_identity(&id("http://127.0.0.1:2")).unwrap_err();
        assert!(matches!(err, CatalogError::WrongIdentity { .. }), "{err}");
        assert_eq!(cat.identity().unwrap(), Some(id("http://127.0.0.1:1")));
    }
}
