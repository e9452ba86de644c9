package collector

// Process is what the OS tells of an owner beyond its pid and name, read
// when asked (Options.Processes): so that five "python3" rows can be told
// apart.
type Process struct {
	PPID int
	UID  int // the owner of the process (effective uid); -1 when unknown
	// Cmdline is the command line, arguments joined by spaces, cut at
	// maxCmdline bytes.
	Cmdline string
	// Exe is the base name of the executable, which --comm matches when a
	// name is longer than the 15 bytes the kernel keeps of comm.
	Exe string
	// Unit is the systemd unit (or scope) of the process's cgroup, "" when
	// it is in none.
	Unit string
	// Container is the container the process runs in, from its cgroup
	// path; nil outside one.
	Container *Container
}

// maxCmdline caps a command line: enough to tell processes apart.
const maxCmdline = 4096

// maxComm is how much of a command name the kernel keeps (TASK_COMM_LEN
// less the NUL).
const maxComm = 15

// longComms reports whether some name is longer than comm can be, so that
// only the executable's name can match it.
func longComms(names []string) bool {
	for _, n := range names {
		if len(n) > maxComm {
			return true
		}
	}
	return false
}

// commMatches reports whether owner o matches the --comm name n: its comm,
// or for a name longer than comm can be, its executable's base name.
func commMatches(o Owner, n string) bool {
	if len(n) <= maxComm {
		return o.Comm == n
	}
	return o.Comm == n[:maxComm] && o.Proc != nil && o.Proc.Exe == n
}
