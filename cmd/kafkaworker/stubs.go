package main

import "github.com/spf13/cobra"

func dlqCmd(g *globals) *cobra.Command { return &cobra.Command{Use: "dlq"} }
func offsetsCmd(g *globals) *cobra.Command { return &cobra.Command{Use: "offsets"} }
func devCmd() *cobra.Command { return &cobra.Command{Use: "dev"} }
