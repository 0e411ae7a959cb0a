import sys,re
# Pairs, in `perf sched timehist -w` output, each paced-producer wake-up with the loadgen -> broker
# wake (the PUBLISH written) and the broker -> loadgen wake (the delivery written); prints the
# broker thread's wake-up -> running and running -> delivery distributions.
broker=sys.argv[2]
ev=[]
for line in open(sys.argv[1]):
    m=re.match(r'\s*(\d+\.\d+)\s+\[(\d+)\]\s+(\S+)\s+awakened: (\S+)',line)
    if m: ev.append(('w',float(m.group(1)),m.group(2),m.group(3),m.group(4))); continue
    m=re.match(r'\s*(\d+\.\d+)\s+\[(\d+)\]\s+(\S+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)',line)
    if m: ev.append(('r',float(m.group(1)),m.group(2),m.group(3),float(m.group(6))))
W=[];P=[];Same=0;N=0;ex=[]
i=0
while i<len(ev):
    e=ev[i]
    if e[0]=='w' and e[3].startswith('paced'):
        t0=e[1]; tw=tb=None; j=i+1
        while j<len(ev) and not (ev[j][0]=='w' and ev[j][3].startswith('paced')):
            f=ev[j]
            if f[0]=='w':
                if tw is None and f[3].startswith('loadgen') and f[4].startswith(broker): tw=f[1]; wcpu=f[2]
                elif tw is not None and f[3].startswith(broker) and f[4].startswith('loadgen'): tb=f[1]; thr=f[3]; bcpu=f[2]; k=j; break
            j+=1
        if tw and tb:
            for f in ev[k+1:k+60]:
                if f[0]=='r' and f[3]==thr:
                    start=f[1]-f[4]/1e3
                    w=(start-tw)*1e6; p=(tb-start)*1e6
                    if w<-1: w=0; p=(tb-tw)*1e6  # already running
                    W.append(w); P.append(p); N+=1; Same+= (wcpu==bcpu)
                    if w+p>150: ex.append((round(t0,6),round(w),round(p),wcpu,bcpu))
                    break
        i=j
    else: i+=1
def q(v,p):
    v=sorted(v); return v[min(len(v)-1,int(p*len(v)))]
for n,v in (('wake->run',W),('run->deliv',P)):
    print("%-10s n %5d p50 %6.1f p90 %6.1f p99 %6.1f p999 %7.1f"%(n,len(v),q(v,.5),q(v,.9),q(v,.99),q(v,.999)))
print("broker on waker's cpu", Same, "of", N); print(ex[:15])
