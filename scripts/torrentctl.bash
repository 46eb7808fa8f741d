# bash completion for torrentctl(1)                        -*- shell-script -*-
#
# Installed as share/bash-completion/completions/torrentctl.  Completes the
# global options, the commands and their options, file names where a file
# is wanted, and torrent ids and info-hashes from `torrentctl --json list`
# when the daemon answers (quickly: at most two seconds).

# The torrents the daemon holds: ids, then info-hashes.
_torrentctl_torrents()
{
    local out
    out=$(timeout 2 "$1" "${@:2}" --json list --fields id,info_hash \
              2>/dev/null) || return 0
    # One JSON line: pick the values without needing jq.
    printf '%s\n' "$out" | grep -o '"id":[0-9]*' | cut -d: -f2
    printf '%s\n' "$out" | grep -o '"info_hash":"[0-9a-f]*"' | cut -d'"' -f4
}

# File names: bash-completion's _filedir when it is loaded, else compgen.
_torrentctl_files()
{
    if declare -F _filedir >/dev/null; then
        _filedir "$@"
    elif [[ $1 == -d ]]; then
        COMPREPLY=($(compgen -d -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}

_torrentctl()
{
    local cur prev words cword
    if declare -F _init_completion >/dev/null; then
        _init_completion || return
    else
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=${COMP_WORDS[COMP_CWORD - 1]}
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
    fi

    local commands="add list info start stop remove verify move files peers
        trackers set stats config watch wait shutdown dht create show help"
    local global_opts="--socket --json --help --version"

    # Find the command and the global options given before it.
    local i cmd="" cmd_at=0
    local -a ctl=("$1")
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            --socket | -s)
                ctl+=(--socket "${words[i + 1]}")
                ((i++))
                ;;
            --socket=*) ctl+=("${words[i]}") ;;
            -*) ;;
            *)
                cmd=${words[i]}
                cmd_at=$i
                break
                ;;
        esac
    done

    if [[ -z $cmd ]]; then
        case $prev in
            --socket | -s)
                _torrentctl_files
                return
                ;;
        esac
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "$global_opts" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        fi
        return
    fi

    # Arguments after the command (not counting options).
    local nargs=0
    for ((i = cmd_at + 1; i < cword; i++)); do
        [[ ${words[i]} == -* ]] || ((nargs++))
    done

    local opts="--help --json"
    case $cmd in
        add)
            case $prev in
                --dir | -d)
                    _torrentctl_files -d
                    return
                    ;;
            esac
            opts+=" --dir --paused"
            if [[ $cur != -* ]]; then
                _torrentctl_files torrent
                return
            fi
            ;;
        list) opts+=" --fields" ;;
        info | verify | files | peers | trackers)
            if [[ $cur != -* && $nargs -eq 0 ]]; then
                COMPREPLY=($(compgen -W "$(_torrentctl_torrents "${ctl[@]}")" \
                    -- "$cur"))
                return
            fi
            ;;
        move)
            opts+=" --no-move"
            if [[ $cur != -* && $nargs -eq 0 ]]; then
                COMPREPLY=($(compgen -W "$(_torrentctl_torrents "${ctl[@]}")" \
                    -- "$cur"))
                return
            fi
            if [[ $cur != -* && $nargs -eq 1 ]]; then
                _torrentctl_files -d
                return
            fi
            ;;
        start | stop)
            if [[ $cur != -* && $nargs -eq 0 ]]; then
                COMPREPLY=($(compgen -W \
                    "all $(_torrentctl_torrents "${ctl[@]}")" -- "$cur"))
                return
            fi
            ;;
        remove)
            opts+=" --delete-data"
            if [[ $cur != -* && $nargs -eq 0 ]]; then
                COMPREPLY=($(compgen -W "$(_torrentctl_torrents "${ctl[@]}")" \
                    -- "$cur"))
                return
            fi
            ;;
        set)
            if [[ $cur != -* && $nargs -eq 0 ]]; then
                COMPREPLY=($(compgen -W "$(_torrentctl_torrents "${ctl[@]}")" \
                    -- "$cur"))
                return
            fi
            if [[ $cur != -* ]]; then
                compopt -o nospace 2>/dev/null
                COMPREPLY=($(compgen -W "download_limit= upload_limit=
                    ratio_limit= download_dir=" -- "$cur"))
                return
            fi
            ;;
        config)
            if [[ $cur != -* && $nargs -eq 0 ]]; then
                COMPREPLY=($(compgen -W "get set reset" -- "$cur"))
                return
            fi
            if [[ $cur != -* ]]; then
                local keys
                keys=$(timeout 2 "${ctl[@]}" --json config get 2>/dev/null |
                    grep -o '"settable":\[[^]]*\]' | grep -o '"[a-z_]*"' |
                    grep -v settable | tr -d '"')
                if [[ ${words[cmd_at + 1]} == set ]]; then
                    compopt -o nospace 2>/dev/null
                    COMPREPLY=($(compgen -W "$(printf '%s= ' $keys)" \
                        -- "$cur"))
                else
                    COMPREPLY=($(compgen -W "$keys" -- "$cur"))
                fi
                return
            fi
            ;;
        watch)
            case $prev in
                --type | -t)
                    COMPREPLY=($(compgen -W "torrent.added torrent.removed
                        torrent.state torrent.completed torrent.error
                        torrent.progress session.settings session.shutdown" \
                        -- "$cur"))
                    return
                    ;;
                --since | --count | -s | -n) return ;;
            esac
            opts+=" --since --count --type --progress"
            ;;
        wait)
            case $prev in
                --for)
                    COMPREPLY=($(compgen -W "complete seeding metadata
                        removed" -- "$cur"))
                    return
                    ;;
                --timeout) return ;;
            esac
            opts+=" --for --timeout"
            if [[ $cur != -* ]]; then
                COMPREPLY=($(compgen -W "$(_torrentctl_torrents "${ctl[@]}")" \
                    -- "$cur"))
                return
            fi
            ;;
        shutdown) opts+=" --wait" ;;
        dht)
            if [[ $cur != -* && $nargs -eq 0 ]]; then
                COMPREPLY=($(compgen -W "get-peers" -- "$cur"))
                return
            fi
            ;;
        create)
            case $prev in
                -o | --output)
                    _torrentctl_files torrent
                    return
                    ;;
                -t | --tracker | -a | --announce | -w | --web-seed | \
                    --comment | --piece-size | --name | --source | -j | \
                    --threads) return ;;
            esac
            opts+=" --output --tracker --announce --web-seed --private
                --comment --piece-size --name --source --no-date --threads
                --force"
            if [[ $cur != -* ]]; then
                _torrentctl_files
                return
            fi
            ;;
        show)
            if [[ $cur != -* ]]; then
                _torrentctl_files torrent
                return
            fi
            ;;
        help)
            COMPREPLY=($(compgen -W "$commands" -- "$cur"))
            return
            ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    fi
} &&
    complete -F _torrentctl torrentctl

# ex: filetype=sh
