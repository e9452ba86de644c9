package ebpf

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"
)

// recordBytes lays out a struct record as closewait.c does.
type recordBytes struct {
	cookie, inode, cwAgeNs                     uint64
	netns, tgid, fd, uid, recvQ, sendQ         uint32
	lastAck, lastData, kaTime, kaIntvl, userTO uint32
	timerLeft                                  uint32
	sport, dport                               uint16
	family, state, flags, kaProbes             uint8
	timer, probesOut, retrans                  uint8
	saddr, daddr                               [16]byte
	comm                                       string
	cgroups                                    uint64
}

func (r recordBytes) bytes() []byte {
	b := make([]byte, RecordSize)
	le := binary.LittleEndian
	le.PutUint64(b[0:], r.cookie)
	le.PutUint64(b[8:], r.inode)
	le.PutUint64(b[16:], r.cwAgeNs)
	for i, v := range []uint32{r.netns, r.tgid, r.fd, r.uid, r.recvQ, r.sendQ, r.lastAck, r.lastData, r.kaTime, r.kaIntvl, r.userTO, r.timerLeft} {
		le.PutUint32(b[24+4*i:], v)
	}
	le.PutUint16(b[72:], r.sport)
	le.PutUint16(b[74:], r.dport)
	copy(b[76:], []byte{r.family, r.state, r.flags, r.kaProbes, r.timer, r.probesOut, r.retrans})
	copy(b[84:], r.saddr[:])
	copy(b[100:], r.daddr[:])
	copy(b[116:132], r.comm)
	le.PutUint64(b[144:], r.cgroups)
	return b
}

func v4(a, b, c, d byte) (x [16]byte) {
	x[0], x[1], x[2], x[3] = a, b, c, d
	return x
}

func v6(s string) [16]byte { return netip.MustParseAddr(s).As16() }

func TestDecodeRecord(t *testing.T) {
	tests := []struct {
		name string
		in   recordBytes
		want Record
	}{
		{
			name: "ipv4 close-wait with owner and stamp",
			in: recordBytes{
				cookie: 0x1122334455667788, inode: 81366, cwAgeNs: 2500 * 1e6,
				netns: 4026531833, tgid: 812, fd: 6, uid: 1000, recvQ: 1, sendQ: 3,
				lastAck: 2496, lastData: 9000, kaTime: 7200000, kaIntvl: 75000, userTO: 0,
				timerLeft: 123, sport: 8080, dport: 51552,
				family: 2, state: 8, flags: RecOwned | RecStamp | RecAges | RecKeepOpen, kaProbes: 9,
				timer: 2, probesOut: 1, retrans: 1,
				saddr: v4(127, 0, 0, 1), daddr: v4(10, 1, 2, 3), comm: "nginx", cgroups: 0xffff888012345600,
			},
			want: Record{
				Cookie: 0x1122334455667788, Inode: 81366, CloseWaitAge: 2500 * time.Millisecond,
				NetNS: 4026531833, TGID: 812, FD: 6, UID: 1000, RecvQ: 1, SendQ: 3,
				LastAckRecv: 2496 * time.Millisecond, LastDataRecv: 9 * time.Second,
				KeepaliveIdle: 2 * time.Hour, KeepaliveInterval: 75 * time.Second, KeepaliveProbes: 9,
				Timer: 2, TimerLeft: 123 * time.Millisecond, ProbesOut: 1, Retransmits: 1,
				Family: 2, State: 8, Flags: RecOwned | RecStamp | RecAges | RecKeepOpen,
				Local:   netip.MustParseAddrPort("127.0.0.1:8080"),
				Remote:  netip.MustParseAddrPort("10.1.2.3:51552"),
				Cgroups: 0xffff888012345600,
			},
		},
		{
			name: "ipv6 not accepted",
			in: recordBytes{
				cookie: 7, family: 10, state: 8, flags: RecAges, recvQ: 1,
				sport: 443, dport: 40000, saddr: v6("::1"), daddr: v6("2001:db8::5"),
			},
			want: Record{
				Cookie: 7, Family: 10, State: 8, Flags: RecAges, RecvQ: 1,
				Local:  netip.MustParseAddrPort("[::1]:443"),
				Remote: netip.MustParseAddrPort("[2001:db8::5]:40000"),
			},
		},
		{
			name: "dual-stack keeps the mapped form",
			in: recordBytes{
				cookie: 9, family: 10, state: 1, sport: 80, dport: 1234,
				saddr: v6("::ffff:127.0.0.1"), daddr: v6("::ffff:127.0.0.2"),
			},
			want: Record{
				Cookie: 9, Family: 10, State: 1,
				Local:  netip.MustParseAddrPort("[::ffff:127.0.0.1]:80"),
				Remote: netip.MustParseAddrPort("[::ffff:127.0.0.2]:1234"),
			},
		},
		{
			name: "listener",
			in:   recordBytes{cookie: 3, family: 2, state: 10, flags: RecListener | RecAges, sport: 22, sendQ: 4096},
			want: Record{
				Cookie: 3, Family: 2, State: 10, Flags: RecListener | RecAges, SendQ: 4096,
				Local:  netip.MustParseAddrPort("0.0.0.0:22"),
				Remote: netip.MustParseAddrPort("0.0.0.0:0"),
			},
		},
		{
			name: "comm fills all 16 bytes",
			in:   recordBytes{cookie: 4, family: 2, state: 8, comm: "abcdefghijklmnop"},
			want: Record{
				Cookie: 4, Family: 2, State: 8,
				Local:  netip.MustParseAddrPort("0.0.0.0:0"),
				Remote: netip.MustParseAddrPort("0.0.0.0:0"),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Record
			if err := DecodeRecord(tt.in.bytes(), &got); err != nil {
				t.Fatal(err)
			}
			want := tt.want
			copy(want.Comm[:], tt.in.comm)
			if got != want {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
			if got.CommString() != tt.in.comm {
				t.Errorf("comm %q, want %q", got.CommString(), tt.in.comm)
			}
		})
	}
}

func TestDecodeRecordErrors(t *testing.T) {
	good := recordBytes{family: 2, state: 8}
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, errShort},
		{"short", good.bytes()[:RecordSize-1], errShort},
		{"family 0", recordBytes{family: 0, state: 8}.bytes(), errFamily},
		{"family 1", recordBytes{family: 1, state: 8}.bytes(), errFamily},
		{"state 0", recordBytes{family: 2, state: 0}.bytes(), errState},
		{"state 13", recordBytes{family: 2, state: 13}.bytes(), errState},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Record
			if err := DecodeRecord(tt.b, &r); !errors.Is(err, tt.want) {
				t.Errorf("error %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDecodeRecordNegativeStamp(t *testing.T) {
	b := recordBytes{family: 2, state: 8, flags: RecStamp, cwAgeNs: 1 << 63}.bytes()
	var r Record
	if err := DecodeRecord(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.CloseWaitAge != 0 || r.Flags&RecStamp != 0 {
		t.Errorf("age %v flags %#x: a negative stamp must read as no stamp", r.CloseWaitAge, r.Flags)
	}
}

func TestDecodeRecords(t *testing.T) {
	var buf []byte
	for i := range 3 {
		buf = append(buf, recordBytes{cookie: uint64(i + 1), family: 2, state: 8}.bytes()...)
	}
	tests := []struct {
		name     string
		b        []byte
		consumed int
		cookies  []uint64
		wantErr  bool
	}{
		{"three whole", buf, 3 * RecordSize, []uint64{1, 2, 3}, false},
		{"partial last", buf[:3*RecordSize-5], 2 * RecordSize, []uint64{1, 2}, false},
		{"less than one", buf[:10], 0, nil, false},
		{"bad second", append(append(append([]byte{}, buf[:RecordSize]...), recordBytes{family: 7, state: 8}.bytes()...), buf[:RecordSize]...), RecordSize, []uint64{1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cookies []uint64
			n, err := DecodeRecords(tt.b, func(r *Record) { cookies = append(cookies, r.Cookie) })
			if (err != nil) != tt.wantErr {
				t.Errorf("error %v, want error %v", err, tt.wantErr)
			}
			if n != tt.consumed {
				t.Errorf("consumed %d, want %d", n, tt.consumed)
			}
			if len(cookies) != len(tt.cookies) {
				t.Fatalf("cookies %v, want %v", cookies, tt.cookies)
			}
			for i := range cookies {
				if cookies[i] != tt.cookies[i] {
					t.Errorf("cookies %v, want %v", cookies, tt.cookies)
				}
			}
		})
	}
}

func TestDecodeRecordsNoAlloc(t *testing.T) {
	var buf []byte
	for i := range 64 {
		buf = append(buf, recordBytes{cookie: uint64(i), family: 10, state: 8, comm: "x"}.bytes()...)
	}
	var sum uint64
	fn := func(r *Record) { sum += r.Cookie }
	// The one Record handed to fn may escape; nothing is allocated per record.
	if n := testing.AllocsPerRun(10, func() { DecodeRecords(buf, fn) }); n > 1 {
		t.Errorf("%v allocations per decode of 64 records, want at most 1", n)
	}
}

// eventBytes lays out a struct event as closewait.c does.
type eventBytes struct {
	time, cookie, inode, cwNs uint64
	netns, pid                uint32
	sport, dport              uint16
	family, olds, news, flags uint8
	saddr, daddr              [16]byte
}

func (e eventBytes) bytes() []byte {
	b := make([]byte, EventSize)
	le := binary.LittleEndian
	le.PutUint64(b[0:], e.time)
	le.PutUint64(b[8:], e.cookie)
	le.PutUint64(b[16:], e.inode)
	le.PutUint64(b[24:], e.cwNs)
	le.PutUint32(b[32:], e.netns)
	le.PutUint32(b[36:], e.pid)
	le.PutUint16(b[40:], e.sport)
	le.PutUint16(b[42:], e.dport)
	copy(b[44:], []byte{e.family, e.olds, e.news, e.flags})
	copy(b[48:], e.saddr[:])
	copy(b[64:], e.daddr[:])
	return b
}

func TestDecodeEvent(t *testing.T) {
	tests := []struct {
		name string
		in   eventBytes
		want Event
	}{
		{
			name: "leave with duration",
			in: eventBytes{time: 123456789, cookie: 42, inode: 99, cwNs: 1_200_000_000, netns: 5, pid: 0,
				sport: 8080, dport: 50000, family: 2, olds: 8, news: 9, flags: EvDuration,
				saddr: v4(127, 0, 0, 1), daddr: v4(127, 0, 0, 2)},
			want: Event{Time: 123456789, Cookie: 42, Inode: 99, CloseWait: 1200 * time.Millisecond, NetNS: 5,
				Family: 2, OldState: 8, NewState: 9, Flags: EvDuration,
				Local:  netip.MustParseAddrPort("127.0.0.1:8080"),
				Remote: netip.MustParseAddrPort("127.0.0.2:50000")},
		},
		{
			name: "classic ipv6 enter",
			in: eventBytes{time: 1, pid: 77, sport: 443, dport: 1, family: 10, olds: 1, news: 8, flags: EvClassic,
				saddr: v6("::1"), daddr: v6("fe80::1")},
			want: Event{Time: 1, PID: 77, Family: 10, OldState: 1, NewState: 8, Flags: EvClassic,
				Local:  netip.MustParseAddrPort("[::1]:443"),
				Remote: netip.MustParseAddrPort("[fe80::1]:1")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Event
			if err := DecodeEvent(tt.in.bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
	for _, bad := range []eventBytes{{family: 2, olds: 0, news: 8}, {family: 2, olds: 1, news: 13}, {family: 3, olds: 1, news: 8}} {
		var e Event
		if err := DecodeEvent(bad.bytes(), &e); err == nil {
			t.Errorf("%+v decoded without error", bad)
		}
	}
	var e Event
	if err := DecodeEvent(make([]byte, EventSize-1), &e); !errors.Is(err, errShort) {
		t.Errorf("short event: %v", err)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(recordBytes{family: 2, state: 8, comm: "nginx", cookie: 1}.bytes())
	f.Add(recordBytes{family: 10, state: 10, flags: RecListener}.bytes())
	f.Add(recordBytes{family: 2, state: 8, flags: RecStamp, cwAgeNs: 1 << 63}.bytes())
	f.Add([]byte{})
	f.Add(make([]byte, 2*RecordSize+7))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Record
		if err := DecodeRecord(b, &r); err == nil {
			if r.Family != afInet && r.Family != afInet6 {
				t.Errorf("accepted family %d", r.Family)
			}
			if r.CloseWaitAge < 0 {
				t.Errorf("negative age %v", r.CloseWaitAge)
			}
			if !r.Local.IsValid() || !r.Remote.IsValid() {
				t.Errorf("invalid addresses %v %v", r.Local, r.Remote)
			}
		}
		n, _ := DecodeRecords(b, func(*Record) {})
		if n%RecordSize != 0 || n > len(b) {
			t.Errorf("consumed %d of %d bytes", n, len(b))
		}
	})
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add(eventBytes{family: 2, olds: 1, news: 8}.bytes())
	f.Add(eventBytes{family: 10, olds: 8, news: 9, flags: EvDuration, cwNs: 1 << 63}.bytes())
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		var e Event
		if err := DecodeEvent(b, &e); err == nil && e.CloseWait < 0 {
			t.Errorf("negative duration %v", e.CloseWait)
		}
	})
}
