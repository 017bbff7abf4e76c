//! Test bed for the virtualbox driver: the stand-in docker-machine.
