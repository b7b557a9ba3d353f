//! `inspect`: read a Secret's or ConfigMap's data.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::Api;
use time::OffsetDateTime;

use crate::cli::ObjectKind;
use crate::error::{Error, Result};
use crate::inspect;
use crate::output::{Format, encode};

use capstan_rotator::bundle::source::{config_map_bytes, secret_bytes};

use super::print;

/// The data of a Secret or ConfigMap, by its kind name, or not found.
pub(super) async fn object_data(
    client: &Client,
    namespace: &str,
    kind: ObjectKind,
    name: &str,
) -> Result<(String, BTreeMap<String, Vec<u8>>)> {
    let (kind_name, data) = match kind {
        ObjectKind::Secret => (
            "Secret",
            Api::<Secret>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await
                .map_err(|e| Error::api(format!("reading Secret/{name} -n {namespace}"), e))?
                .map(secret_bytes),
        ),
        ObjectKind::Configmap => (
            "ConfigMap",
            Api::<ConfigMap>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await
                .map_err(|e| Error::api(format!("reading ConfigMap/{name} -n {namespace}"), e))?
                .map(config_map_bytes),
        ),
    };
    let object = format!("{kind_name}/{name} -n {namespace}");
    let data = data.ok_or_else(|| Error::NotFound(format!("{object} not found")))?;
    Ok((object, data))
}

pub(super) async fn inspect_cmd(
    client: &Client,
    namespace: &str,
    kind: ObjectKind,
    name: &str,
    bundle: Option<&str>,
    format: Format,
) -> Result<i32> {
    let (object, data) = object_data(client, namespace, kind, name).await?;
    let extra = match bundle {
        None => None,
        Some(arg) => {
            let (k, n) = arg.split_once('/').ok_or_else(|| {
                Error::Usage(format!(
                    "--bundle {arg:?}: use configmap/NAME or secret/NAME"
                ))
            })?;
            let k = <ObjectKind as clap::ValueEnum>::from_str(k, true).map_err(|_| {
                Error::Usage(format!(
                    "--bundle {arg:?}: {k:?} is not secret or configmap"
                ))
            })?;
            let (what, d) = object_data(client, namespace, k, n).await?;
            let prefix = what.split(' ').next().unwrap_or_default().to_owned() + ":";
            Some((prefix, d))
        }
    };
    let now = OffsetDateTime::now_utc();
    let report = inspect::report(
        object,
        &data,
        extra.as_ref().map(|(p, d)| (p.as_str(), d)),
        now,
    );
    print(&match format {
        Format::Table => inspect::render(&report, now),
        _ => encode(&report, format)?,
    });
    Ok(0)
}
