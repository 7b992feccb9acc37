//! A new config on SIGHUP: the catalogue applies at once, and only the
//! children whose catalogue entry changed (or went) are restarted; every
//! other child keeps its pid and its ports. Settings the running master is
//! built from (ports, link, runtime directory, name) wait for a restart.

use super::*;

/// Top-level keys whose change needs a restart of the master.
fn changed_for_later(old: &MasterConfig, new: &MasterConfig) -> Vec<&'static str> {
    let mut later = Vec::new();
    let mut check = |name, differs: bool| {
        if differs {
            later.push(name);
        }
    };
    check(
        "lanmanageraddress",
        old.lanmanageraddress != new.lanmanageraddress,
    );
    check(
        "lanmanagerport",
        old.lanmanager_port() != new.lanmanager_port(),
    );
    check("portrangestart", old.portrangestart != new.portrangestart);
    check("portrangesize", old.portrangesize != new.portrangesize);
    check(
        "advertiseaddress",
        old.advertiseaddress != new.advertiseaddress,
    );
    check("token", old.token != new.token);
    check(
        "tlsca",
        (&old.tlsca, &old.tlscert, &old.tlskey) != (&new.tlsca, &new.tlscert, &new.tlskey),
    );
    check("name", old.name != new.name);
    check("metricsaddress", old.metricsaddress != new.metricsaddress);
    check("logmaxbytes", old.logmaxbytes != new.logmaxbytes);
    later
}

impl State {
    /// Applies a re-read config, or keeps everything when it did not parse.
    pub(super) fn on_config_reloaded(&mut self, result: Result<MasterConfig, String>) {
        let new = match result {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("config not reloaded, nothing changed: {e}");
                return;
            }
        };
        let later = changed_for_later(&self.cfg, &new);
        if !later.is_empty() {
            tracing::warn!(
                fields = %later.join(","),
                "config reloaded; these take effect at the next start of the master"
            );
        }
        let modules_before: BTreeSet<String> = self.cfg.services.keys().cloned().collect();
        let old = std::mem::replace(&mut self.cfg.services, new.services);
        let children: Vec<(InstanceName, String)> = self
            .children
            .iter()
            .map(|(n, c)| (n.clone(), c.module.clone()))
            .collect();
        let (mut restarted, mut dropped) = (0u32, 0u32);
        for (instance, module) in children {
            match (old.get(&module), self.cfg.services.get(&module)) {
                (Some(a), Some(b)) if a == b => continue,
                (_, Some(_)) => restarted += 1,
                (_, None) => dropped += 1,
            }
            tracing::info!(%instance, module, "catalogue entry changed: stopping the child");
            // Ordered: the lan manager reopens the need at once, no failure counted.
            self.stop_child(&instance, true);
        }
        // Claims for modules no longer served are given back.
        let stale: Vec<InstanceName> = self
            .open
            .iter()
            .filter(|(_, n)| !self.cfg.services.contains_key(&n.modulename))
            .map(|(i, _)| i.clone())
            .collect();
        for instance in stale {
            self.drop_claim(&instance);
        }
        self.cfg.logretentionms = new.logretentionms;
        self.cfg.logretentionbytes = new.logretentionbytes;
        self.cfg.reconnectmaxms = new.reconnectmaxms;
        tracing::info!(restarted, dropped, "config reloaded");
        let modules_after: BTreeSet<String> = self.cfg.services.keys().cloned().collect();
        if modules_after != modules_before && self.welcomed() {
            // The lan manager answers a new module list with a fresh snapshot.
            self.send_capacity();
        }
        self.claim_open_needs();
    }
}
