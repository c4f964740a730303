# shellcheck shell=bash
# Arm B's nginx config, shared by bench/run.sh and bench/cpu.sh (sourced, not run), so that both
# measure the same proxy: proxy_pass to the bench upstream with keepalive, no buffering, no
# access log.
#
#   nginx_config DIR UP_PORT PROCESSES SERVER_DIRECTIVES
#
# Writes DIR/nginx.conf (temp files under DIR/tmp, pid and error log in DIR). PROCESSES is
# `auto` (a master and one worker per core, like keygate's workers) or `single` (one process,
# no master: what callgrind can follow). SERVER_DIRECTIVES go in the server block: its `listen`
# lines and any TLS settings.
nginx_config() {
    local dir=$1 up_port=$2 processes=$3 server=$4 user_line='' process_lines
    ((EUID == 0)) && user_line='user root;'
    case $processes in
    auto) process_lines='worker_processes auto;' ;;
    single) process_lines=$'master_process off;\nworker_processes 1;' ;;
    *) echo "nginx_config: PROCESSES is auto or single, not $processes" >&2; return 2 ;;
    esac
    mkdir -p "$dir/tmp"
    cat >"$dir/nginx.conf" <<EOF
$user_line
$process_lines
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    tcp_nodelay on;
    # keygate closes no connection after a number of requests; nginx's default is 1000.
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream bench {
        server 127.0.0.1:$up_port;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
$server
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }
    }
}
EOF
}
