//! Test bed for the ssh driver (hosts with sshd and dockerd, keys, hosts files).
