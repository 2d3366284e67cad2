package kconn

import (
	"errors"
	"net"
	"testing"

	"github.com/IBM/sarama"
)

// Sever closes the connections made and refuses new ones; a connection
// closed by its user is forgotten.
func TestSeverableDialer(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	s := sarama.NewConfig()
	d := InstallSeverableDialer(s)
	if !s.Net.Proxy.Enable || s.Net.Proxy.Dialer != d {
		t.Fatal("the dialer is not installed")
	}
	a, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
	if n := len(d.conns); n != 1 {
		t.Fatalf("%d connections kept, want 1 (the closed one is forgotten)", n)
	}
	d.Sever()
	if _, err := a.Read(make([]byte, 1)); err == nil {
		t.Fatal("a severed connection still reads")
	}
	if _, err := d.Dial("tcp", ln.Addr().String()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("dial after Sever: %v, want net.ErrClosed", err)
	}
}
