//! One file per command. Results go to stdout; progress and logs to stderr. This module only
//! dispatches; `cluster` holds what the commands share.

mod check;
pub(crate) mod cluster;
mod down;
mod drivers;
mod env;
mod ls;
mod plan;
mod push;
mod registry;
mod save_load;
mod seen;
mod ssh;
mod status;
mod up;

use lab_core::Result;

use crate::args::{Cli, Command};

pub async fn dispatch(cli: Cli) -> Result<i32> {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Up(a) => up::up(config, &a).await,
        Command::Plan(a) => plan::plan_cmd(config, &a.topology, a.output).await,
        Command::Status(a) => status::status(config, a.cluster.cluster.as_deref(), a.output).await,
        Command::Ls(a) => ls::ls(a.output),
        Command::Env(a) => env::env(config, &a).await,
        Command::Check(a) => check::check(config, a.cluster.cluster.as_deref(), a.output).await,
        Command::Push(a) => push::push_cmd(config, &a).await,
        Command::Images(a) => push::images(config, &a).await,
        Command::Registry(a) => registry::registry(config, &a).await,
        Command::Down(a) => down::down(config, a.cluster.as_deref()).await,
        Command::Drivers(a) => drivers::drivers(a.output, a.long).await,
        Command::Ssh(a) => ssh::ssh(config, &a).await,
        Command::DriverTest(a) => crate::driver_test::run(config, &a).await,
        Command::Relay(a) => lab_core::registry::relay::serve(a.listen, a.to.clone(), a.certs)
            .await
            .map(|()| 0)
            .map_err(|e| lab_core::Error::op(format!("relay to {}", a.to), e.to_string())),
    }
}
