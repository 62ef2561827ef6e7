# Sourced by bench/run.sh and bench/profile.sh.
#
# wait_subscribed VHOST: waits (up to 10 s) until a worker consumes
# chit.task.noop and a sink consumes chit.sink.default in VHOST, so the clock
# starts with both subscribed. Workers and sinks also consume other queues
# (the dead-letter watch, heartbeats), so a count of consumers is not enough.
wait_subscribed() {
    local vhost=$1
    for _ in $(seq 1 100); do
        rabbitmqctl -q list_consumers -p "$vhost" queue_name 2>/dev/null |
            awk '$1 == "chit.task.noop" { t = 1 } $1 == "chit.sink.default" { s = 1 }
                 END { exit !(t && s) }' && return 0
        sleep 0.1
    done
}
