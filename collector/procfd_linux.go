package collector

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// ReadFDUsage reads how many fds pid has open and its soft limit, from
// procRoot/PID/fd and procRoot/PID/limits.
//
// Since Linux 6.2 the size of the fd directory is its number of entries,
// counted from the fd bitmap: a stat, however many fds. Older kernels say
// 0 there and the entries are counted, which costs about a microsecond per
// fd, so callers should ask only for the processes they show.
func ReadFDUsage(procRoot string, pid int) (FDUsage, error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	dir := procRoot + "/" + strconv.Itoa(pid)
	var u FDUsage
	var st unix.Stat_t
	if err := unix.Stat(dir+"/fd", &st); err != nil {
		return u, err
	}
	u.Open = int(st.Size)
	if u.Open == 0 {
		n, err := countDirents(dir + "/fd")
		if err != nil {
			return u, err
		}
		u.Open = n
	}
	b, err := os.ReadFile(dir + "/limits")
	if err != nil {
		return u, err
	}
	u.Limit, err = parseNofileLimit(b)
	return u, err
}

// parseNofileLimit takes the soft limit from the "Max open files" line of
// /proc/PID/limits; "unlimited" gives 0.
func parseNofileLimit(b []byte) (int, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("Max open files"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) == 0 {
			break
		}
		if string(f[0]) == "unlimited" {
			return 0, nil
		}
		n, err := strconv.Atoi(string(f[0]))
		if err != nil || n < 0 {
			break
		}
		return n, nil
	}
	return 0, fmt.Errorf("no \"Max open files\" limit")
}

// countDirents counts the entries of dir other than . and .. without
// allocating a name for each.
func countDirents(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	buf := make([]byte, 32<<10)
	n := 0
	for {
		k, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		if k <= 0 {
			return n, nil
		}
		_, count, _ := unix.ParseDirent(buf[:k], -1, nil)
		n += count
	}
}
