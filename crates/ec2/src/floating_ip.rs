//! The controllers' floating IP, moved through the EC2 API to whichever
//! controller leads — the two ways Pacemaker's `awsvip` and
//! `aws-vpc-move-ip` agents do it:
//!
//! - a secondary private IP assigned to this controller's network
//!   interface (`AssignPrivateIpAddresses` with reassignment allowed, and
//!   unassigned from any other holder first: a stand-in may ignore
//!   `AllowReassignment`, and a dead leader cannot let go itself);
//! - and/or a route table's `/32` route pointed at this interface
//!   (`ReplaceRoute`, or `CreateRoute` the first time);
//!
//! then, if a device is named, the address added to it on this host (`ip
//! addr add`), as the instance's OS must also answer for it.

use aws_sdk_ec2::error::ProvideErrorMetadata;

#[derive(Debug, Clone)]
pub struct Settings {
    pub ip: String,
    /// This controller's network interface (`eni-…`).
    pub eni: String,
    pub route_table: Option<String>,
    /// Add the address to this device on this host (`ip addr add`).
    pub device: Option<String>,
}

pub struct FloatingIp {
    client: aws_sdk_ec2::Client,
    settings: Settings,
}

use super::why;

impl FloatingIp {
    pub async fn new(settings: Settings) -> Result<FloatingIp, String> {
        let ip: std::net::Ipv4Addr =
            settings.ip.parse().map_err(|e| format!("--ec2-floating-ip '{}': {e}", settings.ip))?;
        if !settings.eni.starts_with("eni-") {
            return Err(format!("--ec2-floating-ip-eni '{}' is not a network interface id (eni-…)", settings.eni));
        }
        let settings = Settings { ip: ip.to_string(), ..settings };
        Ok(FloatingIp { client: super::client().await?, settings })
    }

    pub fn describe(&self) -> String {
        format!("floating IP {} on {}", self.settings.ip, self.settings.eni)
    }

    /// The interfaces that hold the address now. Real EC2 finds secondary
    /// addresses through the filter; a stand-in that matches primaries
    /// only is read in full instead.
    async fn holders(&self) -> Result<Vec<String>, String> {
        let ip = &self.settings.ip;
        let holds = |eni: &aws_sdk_ec2::types::NetworkInterface| {
            eni.private_ip_addresses().iter().any(|a| a.private_ip_address() == Some(ip.as_str()))
        };
        let filter = aws_sdk_ec2::types::Filter::builder().name("addresses.private-ip-address").values(ip).build();
        let found = self
            .client
            .describe_network_interfaces()
            .filters(filter)
            .send()
            .await
            .map_err(|e| format!("DescribeNetworkInterfaces: {}", why(&e)))?;
        let mut out: Vec<String> = found
            .network_interfaces()
            .iter()
            .filter(|n| holds(n))
            .filter_map(|n| n.network_interface_id().map(str::to_string))
            .collect();
        if out.is_empty() {
            let mut pages = self.client.describe_network_interfaces().into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| format!("DescribeNetworkInterfaces: {}", why(&e)))?;
                out.extend(
                    page.network_interfaces()
                        .iter()
                        .filter(|n| holds(n))
                        .filter_map(|n| n.network_interface_id().map(str::to_string)),
                );
            }
        }
        Ok(out)
    }

    pub async fn acquire(&self) -> Result<String, String> {
        let Settings { ip, eni, route_table, device } = &self.settings;
        let mut did = Vec::new();
        for other in self.holders().await?.into_iter().filter(|h| h != eni) {
            match self
                .client
                .unassign_private_ip_addresses()
                .network_interface_id(&other)
                .private_ip_addresses(ip)
                .send()
                .await
            {
                Ok(_) => did.push(format!("unassigned from {other}")),
                Err(e) => tracing::warn!(eni = %other, error = %why(&e), "cannot unassign the floating IP"),
            }
        }
        self.client
            .assign_private_ip_addresses()
            .network_interface_id(eni)
            .private_ip_addresses(ip)
            .allow_reassignment(true)
            .send()
            .await
            .map_err(|e| format!("AssignPrivateIpAddresses {ip} to {eni}: {}", why(&e)))?;
        did.push(format!("assigned to {eni}"));
        if let Some(rtb) = route_table {
            let cidr = format!("{ip}/32");
            let replaced = self
                .client
                .replace_route()
                .route_table_id(rtb)
                .destination_cidr_block(&cidr)
                .network_interface_id(eni)
                .send()
                .await;
            match replaced {
                Ok(_) => did.push(format!("route {cidr} in {rtb} to {eni}")),
                // No such route yet: EC2 says so as InvalidParameterValue
                // ("… Use CreateRoute instead."), or InvalidRoute.NotFound.
                Err(e)
                    if e.code().is_some_and(|c| c.starts_with("InvalidRoute"))
                        || e.message().is_some_and(|m| m.contains("CreateRoute")) =>
                {
                    self.client
                        .create_route()
                        .route_table_id(rtb)
                        .destination_cidr_block(&cidr)
                        .network_interface_id(eni)
                        .send()
                        .await
                        .map_err(|e| format!("CreateRoute {cidr} in {rtb}: {}", why(&e)))?;
                    did.push(format!("route {cidr} in {rtb} created to {eni}"));
                }
                Err(e) => return Err(format!("ReplaceRoute {cidr} in {rtb}: {}", why(&e))),
            }
        }
        if let Some(dev) = device {
            ip_addr("add", ip, dev).await?;
            did.push(format!("added to {dev}"));
        }
        Ok(format!("{ip} {}", did.join(", ")))
    }

    pub async fn release(&self) -> Result<String, String> {
        let Settings { ip, eni, device, .. } = &self.settings;
        if let Some(dev) = device {
            let _ = ip_addr("del", ip, dev).await;
        }
        if self.holders().await?.iter().any(|h| h == eni) {
            self.client
                .unassign_private_ip_addresses()
                .network_interface_id(eni)
                .private_ip_addresses(ip)
                .send()
                .await
                .map_err(|e| format!("UnassignPrivateIpAddresses {ip} from {eni}: {}", why(&e)))?;
        }
        Ok(format!("{ip} released from {eni}"))
    }
}

/// `ip addr add|del IP/32 dev DEV`; adding an address already there is done.
async fn ip_addr(verb: &str, ip: &str, dev: &str) -> Result<(), String> {
    let out = tokio::process::Command::new("ip")
        .args(["addr", verb, &format!("{ip}/32"), "dev", dev])
        .output()
        .await
        .map_err(|e| format!("ip addr {verb}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || (verb == "add" && text.contains("File exists")) {
        Ok(())
    } else {
        Err(format!("ip addr {verb} {ip}/32 dev {dev}: {}", text.trim()))
    }
}
